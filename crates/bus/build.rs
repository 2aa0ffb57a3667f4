//! Generates the gRPC adapter's client and server stubs (service `banyan.bus.v1.Bus`).
//!
//! The messages are prost structs written in Rust (`src/grpc/messages.rs`, which also shows
//! the equivalent `.proto`), so tonic-build's `manual` builder makes the service code without
//! `protoc` on the machine.

fn main() {
    let codec = "tonic_prost::ProstCodec";
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::grpc::messages::{input}"))
            .output_type(format!("crate::grpc::messages::{output}"))
            .codec_path(codec)
            .build()
    };
    let service = tonic_build::manual::Service::builder()
        .name("Bus")
        .package("banyan.bus.v1")
        .comment("The bus between processes: one request answered, one event handed in.")
        .method(method("request", "Request", "CallRequest", "CallReply"))
        .method(method("push_event", "PushEvent", "EventPush", "EventAck"))
        .build();
    tonic_build::manual::Builder::new()
        .build_transport(false)
        .compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
