//! Tests of kiln-test's services against the real Distribution registry and
//! the real skopeo client. One binary; one module per service.

mod fault_proxy; // FaultProxy: injected 503/429/cuts/delays, keep-alive counting
mod plain; // plain HTTP registry: skopeo pushes, catalog, process lifecycle
mod tls_auth; // TLS + htpasswd, mutual TLS
mod token_auth; // token server + registry token auth
