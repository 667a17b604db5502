//! The generated API is what the `.proto` files say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use prost_types::FileDescriptorSet;

#[test]
fn descriptor_set_holds_both_versioned_packages() {
    let fds = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let packages: Vec<&str> = fds.file.iter().map(|f| f.package()).collect();
    assert!(packages.contains(&"relais.session.v1"), "{packages:?}");
    assert!(packages.contains(&"relais.router.v1"), "{packages:?}");

    let session = fds
        .file
        .iter()
        .find(|f| f.package() == "relais.session.v1")
        .unwrap();
    let svc = session
        .service
        .iter()
        .find(|s| s.name() == "Session")
        .unwrap();
    let attach = svc.method.iter().find(|m| m.name() == "Attach").unwrap();
    assert!(attach.client_streaming() && attach.server_streaming());
    assert_eq!(attach.input_type(), ".relais.session.v1.EdgeMessage");
    assert_eq!(attach.output_type(), ".relais.session.v1.SessionMessage");
    let creds = svc
        .method
        .iter()
        .find(|m| m.name() == "GetCredentials")
        .unwrap();
    assert!(!creds.client_streaming() && !creds.server_streaming());

    let router = fds
        .file
        .iter()
        .find(|f| f.package() == "relais.router.v1")
        .unwrap();
    let route = &router.service[0].method[0];
    assert_eq!(route.name(), "Route");
    assert!(!route.client_streaming() && !route.server_streaming());
}
