//! Compiles the greeter proto for the `tonic_greeter` example (protoc: Debian's
//! protobuf-compiler, which `scripts/test.sh` installs), and, with the `volo` feature, the Volo
//! greeter (`proto/greeter.proto`) and echo (`idl/echo.thrift`) through volo-build (no protoc
//! needed; volo-build is an optional build dependency, so builds without `volo` skip it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/greeter.proto")?;
    #[cfg(feature = "volo")]
    {
        volo_build::Builder::protobuf()
            .include_dirs(vec!["proto".into()])
            .add_service("proto/greeter.proto")
            .filename("volo_greeter.rs".into())
            .write()?;
        volo_build::Builder::thrift()
            .include_dirs(vec!["idl".into()])
            .add_service("idl/echo.thrift")
            .filename("volo_echo.rs".into())
            .write()?;
        println!("cargo:rerun-if-changed=idl/echo.thrift");
        println!("cargo:rerun-if-changed=proto/greeter.proto");
    }
    Ok(())
}
