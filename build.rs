//! Compiles the Dragonfly protocol subset in `src/p2p/proto/` into Rust (prost messages, tonic
//! client and server stubs) at build time, with `protox`, a proto compiler written in Rust: no
//! `protoc` binary is needed, so `cargo install --path .` stays one command on a fresh machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "src/p2p/proto";
    let files = ["common.proto", "errordetails.proto", "scheduler.proto", "dfdaemon.proto", "manager.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={dir}/{f}");
    }
    let fds = protox::compile(files, [dir])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
