//! `GrpcCredentials` (the edge's account store) against a session node's real store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;
use proto::GrpcCredentials;
use storage::{AccountStore, Credentials, StorageError};
use xmpp::BareJid;
use xmpp::scram::{self, ScramHash};

#[tokio::test]
async fn credentials_round_trip_byte_exact() {
    let node = Node::start().await;
    let jid: BareJid = "alice@localhost".parse().unwrap();
    let salt = scram::new_salt();
    let creds = Credentials {
        keys: vec![
            scram::derive_keys(ScramHash::Sha1, "pencil", &salt, 4096),
            scram::derive_keys(ScramHash::Sha256, "pencil", &salt, 8192),
        ],
    };
    node.storage
        .accounts
        .create_account(&jid, &creds)
        .await
        .unwrap();

    let edge = node.edge("edge").await;
    let store = edge.credentials();
    let got = store.get_credentials(&jid).await.unwrap();
    assert_eq!(got.as_ref(), Some(&creds));
    // SCRAM on the edge works with what came over the wire.
    let keys = got.unwrap().get(ScramHash::Sha256).cloned().unwrap();
    assert!(scram::verify_password(&keys, "pencil"));
    assert!(!scram::verify_password(&keys, "pen"));

    // An unknown account is "not found", not an error.
    let nobody: BareJid = "nobody@localhost".parse().unwrap();
    assert_eq!(store.get_credentials(&nobody).await.unwrap(), None);

    // A standalone store works the same.
    let lazy = GrpcCredentials::connect_lazy(node.endpoint()).unwrap();
    assert_eq!(
        lazy.get_credentials(&jid).await.unwrap(),
        Some(creds.clone())
    );
}

#[tokio::test]
async fn only_account_creation_is_carried() {
    let node = Node::start().await;
    let store = GrpcCredentials::connect_lazy(node.endpoint()).unwrap();
    let jid: BareJid = "alice@localhost".parse().unwrap();
    let creds = Credentials { keys: vec![] };
    let unavailable = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Unavailable(ref m)) if m == "not available over the session protocol");
    // Creation (XEP-0077 on an edge) is carried, and refuses an account without keys.
    assert!(store.create_account(&jid, &creds).await.is_err());
    assert!(unavailable(store.set_credentials(&jid, &creds).await));
    assert!(unavailable(store.delete_account(&jid).await));
    assert!(store.list_accounts("localhost").await.is_err());
    assert!(store.account_exists(&jid).await.is_err());
    // Nothing was written on the node.
    assert!(!node.storage.accounts.account_exists(&jid).await.unwrap());
    let keys = Credentials {
        keys: vec![scram::derive_keys(
            scram::ScramHash::Sha256,
            "pencil",
            &scram::new_salt(),
            4096,
        )],
    };
    store.create_account(&jid, &keys).await.unwrap();
    assert_eq!(
        node.storage.accounts.get_credentials(&jid).await.unwrap(),
        Some(keys.clone())
    );
    assert!(matches!(
        store.create_account(&jid, &keys).await,
        Err(StorageError::AlreadyExists)
    ));
}

#[tokio::test]
async fn an_unreachable_node_is_a_storage_unavailable_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let store = GrpcCredentials::connect_lazy(format!("http://{addr}")).unwrap();
    let err = store
        .get_credentials(&"alice@localhost".parse().unwrap())
        .await
        .err();
    assert!(matches!(err, Some(StorageError::Unavailable(_))), "{err:?}");
}
