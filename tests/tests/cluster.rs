//! The cluster: 2 edges, 2 session nodes, a router and a real redis-server on loopback.
//! The client scenarios of the standalone server run with the two users on different edges
//! and different session nodes; then failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

tests::client_scenarios!(tests::deploy::cluster);
