// The volo-thrift echo of the `volo_echo_server` / `volo_echo_client` examples (code generated
// by volo-build in build.rs; nothing generated is committed).
namespace rs echo

struct EchoRequest {
    1: required string message,
}

struct EchoResponse {
    1: required string message,
    // Which server answered, so a client can count the spread.
    2: required string server,
}

service Echo {
    EchoResponse echo(1: EchoRequest req),
}
