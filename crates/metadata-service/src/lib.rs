//! `metadata-service`: the Bulletproof baseline store. An axum API (DESIGN §6) over a
//! [`store::Store`], sled by default. The binary (`main.rs`) only wires configuration,
//! logging and signals around [`server::serve`].

pub mod app;
pub mod auth;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod store;
