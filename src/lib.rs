//! portcullis: a Backend-for-Frontend auth proxy on Pingora.
//!
//! Modules follow the data path of a request:
//! `config` (file → validated types) → `server` (Pingora wiring) → `proxy` (the `ProxyHttp`
//! phases: route, authenticate, refresh, inject) → `session` (cookie crypto and the store
//! trait with its `memory` and `redis` implementations) → `oidc` (discovery, login, callback,
//! refresh, logout) → `admin` (health, readiness, metrics, the identity assertion's JWKS); `reload` re-reads the configuration
//! file and swaps in what can change live. `webhook` is the separate
//! `portcullis webhook` server that injects the sidecar into Kubernetes pods.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod assertion;
pub mod cli;
pub mod clock;
pub mod config;
pub mod edge;
pub mod listen;
pub mod metrics;
pub mod oidc;
pub mod percent;
pub mod proxy;
pub mod random;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod webhook;
