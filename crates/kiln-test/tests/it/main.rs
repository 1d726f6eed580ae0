//! Tests of kiln-test's services against the real Distribution registry and
//! the real skopeo client. One binary; one module per service.

mod cloud_emulators; // Google (metadata, token_uri, GCS), Entra ID, the ACR front, Azurite
mod fault_proxy; // FaultProxy: injected 503/429/cuts/delays, keep-alive counting
mod moto; // moto_server: S3 objects, the ECR token, STS web identity
mod plain; // plain HTTP registry: skopeo pushes, catalog, process lifecycle
mod tls_auth; // TLS + htpasswd, mutual TLS
mod token_auth; // token server + registry token auth
