//! The AWS container credentials endpoint: what the EKS Pod Identity agent
//! (and ECS's task role endpoint) serves. A pod gets
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; the SDKs send
//! `GET FULL_URI` with the file's contents as `Authorization` and take the
//! JSON keys it answers. Here on plain HTTP at `127.0.0.1` (the SDKs allow
//! plain HTTP to loopback), answering with keys the test chose (for example
//! moto's STS keys of a role, so what they unlock shows they were used).

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::server::{HttpServer, Request, Response};
use crate::error::Result;
use crate::moto::AwsCredentials;

/// One request the endpoint received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCredentialsRequest {
    /// The method (the SDKs send `GET`).
    pub method: String,
    /// The path and query.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running container credentials endpoint; stops on drop.
pub struct AwsContainerCredentials {
    server: HttpServer,
    requests: Arc<Mutex<Vec<ContainerCredentialsRequest>>>,
}

impl AwsContainerCredentials {
    /// Serves `credentials` at `/v1/credentials` to requests whose
    /// `Authorization` is `authorization_token`; others get 401 and any other
    /// path 404, as the Pod Identity agent answers.
    pub fn start(credentials: AwsCredentials, authorization_token: &str) -> Result<Self> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let token = authorization_token.to_string();
        let handler = Arc::new(move |request: &Request| {
            let authorization = request.header("authorization").map(str::to_string);
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ContainerCredentialsRequest {
                    method: request.method.clone(),
                    target: request.target.clone(),
                    authorization: authorization.clone(),
                });
            if request.path() != "/v1/credentials" {
                return Response::json(404, &json!({"message": "not found"}));
            }
            if authorization.as_deref() != Some(token.as_str()) {
                return Response::json(401, &json!({"message": "invalid authorization token"}));
            }
            Response::json(
                200,
                &json!({
                    "AccessKeyId": credentials.access_key_id,
                    "SecretAccessKey": credentials.secret_access_key,
                    "Token": credentials.session_token,
                    "Expiration": credentials.expiration,
                }),
            )
        });
        let server = HttpServer::start("aws-container-credentials", None, handler)?;
        Ok(Self { server, requests })
    }

    /// `http://127.0.0.1:PORT/v1/credentials`: the pod's
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub fn full_uri(&self) -> String {
        format!("{}/v1/credentials", self.server.url())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ContainerCredentialsRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
