//! The operations endpoint: health, readiness and Prometheus metrics with real values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::{Server, http_get};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = Server::start_with("[telemetry]\nhttp = \"127.0.0.1:0\"\n");
    let http = s.http.expect("ops endpoint address");
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    assert_eq!(http_get(http, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(http_get(http, "/nope").await.0, 404);

    s.add_user("alice", "pw");
    let mut c = s.login("alice", "pw", "r").await;
    c.go_online().await;
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    let open = body
        .lines()
        .find(|l| {
            l.starts_with("relais_edge_connections_open") && l.contains("listener=\"starttls\"")
        })
        .unwrap_or_else(|| panic!("no open-connections gauge in:\n{body}"));
    let value: f64 = open.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= 1.0, "{open}");
    assert!(
        body.contains("relais_edge_connections_accepted_total"),
        "{body}"
    );
}
