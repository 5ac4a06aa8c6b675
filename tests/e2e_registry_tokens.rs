//! Token-service quirks of hosted registries, against docker-registry 2.8 in `auth.token` mode and
//! the test token service (`support_registry::token`, which signs real JWTs the registry checks):
//! a realm URL that already has query parameters, a challenge naming several scopes (added to the
//! registry's real challenge by the fault front), a token answer with only `access_token`, and an
//! OAuth2 endpoint that wants `POST` with a refresh-token grant of the docker config's
//! `identitytoken`.
//!
//! Invariant: each test starts its own token service, registry and daemon.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;

use std::fs;
use std::path::Path;
use std::process::Output;

use support_registry::front::{Front, FrontOpts};
use support_registry::*;

const USER: &str = "e2e-user";
const PASSWORD: &str = "S3cret-pa55word-e2e";
const IDENTITY_TOKEN: &str = "e2e-identity-token-0123456789";

fn assert_pulled(result: &Output, out: &Path, expected: &[u8], what: &str) {
    assert!(result.status.success(), "{what}: dfget failed ({}): {}", result.status, stderr_of(result));
    let got = fs::read(out).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", out.display()));
    assert!(got == expected, "{what}: got {} bytes, expected {} (contents differ)", got.len(), expected.len());
}

/// A token-auth registry whose challenge realm is `realm_suffix` appended to the service's realm,
/// holding `body` at `repo_tag`, pushed by the oras CLI with the user's credentials.
fn token_registry(tokens: &TokenServer, realm_suffix: &str, repo_tag: &str, body: &[u8]) -> Registry {
    let auth = match RegistryAuth::token(tokens) {
        RegistryAuth::Token { realm, service, issuer, cert } => {
            RegistryAuth::Token { realm: format!("{realm}{realm_suffix}"), service, issuer, cert }
        }
        other => other,
    };
    let registry = Registry::start(auth);
    let mut cli = OrasCli::plain(&registry.host());
    cli.credentials = Some((USER.into(), PASSWORD.into()));
    cli.push(repo_tag, body, &[]);
    registry
}

fn pull(daemon: &OrasDaemon, url: &str, body: &[u8], what: &str) {
    let dir = temp_dir("tokens-out-");
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(url, &out), &out, body, what);
}

#[test]
fn realm_with_query_parameters_keeps_them_and_token_with_only_access_token_is_used() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let body = content(3 * MIB + 5, 41);
    let registry = token_registry(&tokens, "?tenant=e2e&x=a%20b", "public/img:v1", &body);
    tokens.set_only_access_token(true);
    let n_before = tokens.requests().len();
    let daemon = OrasDaemon::start(DaemonOpts::default());
    pull(&daemon, &registry.oras_url("public/img:v1"), &body, "realm with a query, access_token only");
    let requests = &tokens.requests()[n_before..];
    assert!(!requests.is_empty(), "the daemon asked for no token");
    for r in requests {
        let has = |k: &str, v: &str| r.params.iter().any(|(pk, pv)| pk == k && pv == v);
        assert!(has("tenant", "e2e") && has("x", "a b"), "the realm's own query was lost: {r:#?}");
        assert!(has("service", tokens.service()) && has("scope", "repository:public/img:pull"), "{r:#?}");
    }
}

#[test]
fn challenge_with_several_scopes_asks_for_each_of_them() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let body = content(2 * MIB + 9, 42);
    let registry = token_registry(&tokens, "", "public/img:v1", &body);
    let extra = "repository:public/other:pull";
    let opts = FrontOpts { challenge_extra_scope: Some(extra), ..FrontOpts::default() };
    let front = Front::start(&registry.host(), registry.storage_root(), opts);
    let n_before = tokens.requests().len();
    let daemon = OrasDaemon::start(DaemonOpts::default());
    pull(&daemon, &front.oras_url("public/img:v1"), &body, "challenge with two scopes");
    let requests = &tokens.requests()[n_before..];
    let want = vec![extra.to_string(), "repository:public/img:pull".to_string()];
    assert!(
        requests.iter().any(|r| r.scopes == want && r.params.iter().filter(|(k, _)| k == "scope").count() == 2),
        "no token request with both scopes as separate parameters: {requests:#?}"
    );
}

#[test]
fn identity_token_from_docker_config_is_traded_by_an_oauth2_refresh_token_post() {
    let tokens = TokenServer::start(USER, PASSWORD);
    tokens.set_identity_token(IDENTITY_TOKEN);
    tokens.set_only_access_token(true);
    let body = content(4 * MIB + 1, 43);
    let registry = token_registry(&tokens, "", "private/img:v1", &body);
    let n_before = tokens.requests().len();
    let daemon = OrasDaemon::start(DaemonOpts {
        identity_tokens: vec![(registry.host(), IDENTITY_TOKEN.into())],
        log_level: Some("debug"),
        ..DaemonOpts::default()
    });
    pull(&daemon, &registry.oras_url("private/img:v1"), &body, "identity token");
    let requests = &tokens.requests()[n_before..];
    assert!(!requests.is_empty() && requests.iter().all(|r| r.method == "POST" && r.status == 200), "{requests:#?}");
    let r = &requests[0];
    let has = |k: &str, v: &str| r.params.iter().any(|(pk, pv)| pk == k && pv == v);
    assert!(has("grant_type", "refresh_token") && has("refresh_token", IDENTITY_TOKEN), "{r:#?}");
    assert!(has("service", tokens.service()) && has("scope", "repository:private/img:pull"), "{r:#?}");
    assert!(!daemon.diagnostics().contains(IDENTITY_TOKEN), "the identity token reached a log");
}
