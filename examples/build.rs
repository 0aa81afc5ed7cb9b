//! Compiles the greeter proto for the `tonic_greeter` example (protoc: Debian's
//! protobuf-compiler, which `scripts/test.sh` installs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/greeter.proto")?;
    Ok(())
}
