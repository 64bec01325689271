//! The nRF Cloud client against the stand-in, over real loopback sockets:
//! each answer nRF Cloud can give reaches the caller as the documented
//! outcome, retries happen only where they may, and the key stays secret.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nrf_cloud::{
    ApiKey, ApiKeyError, BulkOpStatus, ClaimRow, CloudClient, CloudError, CloudSettings,
    OnboardRow, RowOutcome,
};
use nrf_cloud_standin::{Endpoint, FailedShape, Fault, KeySeen, StandIn, StandInConfig, Verdict};
use nrf91_token::encode::{self, IdentityBody};
use p256::ecdsa::SigningKey;
use secure_file::UnsafeFile;
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

fn device_uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x50503041_3633_4261_8000_000000000000 | n)
}

/// A `%ATTESTTOKEN` of device `n`, as the simulator signs them.
fn token(n: u128, key: &SigningKey) -> String {
    let body = IdentityBody {
        msg_type: 1,
        device_uuid: *device_uuid(n).as_bytes(),
        device_type: 4,
        firmware_uuid: [7; 16],
        nonce: rand::random(),
    };
    encode::identity_token(&body, key)
}

fn signing_key() -> SigningKey {
    SigningKey::random(&mut rand::rngs::OsRng)
}

async fn standin(config: StandInConfig) -> StandIn {
    StandIn::start(StandInConfig {
        api_key: KEY.into(),
        ..config
    })
    .await
    .unwrap_or_else(|e| panic!("stand-in: {e}"))
}

/// Settings for the stand-in with short backoffs (the retry logic is the
/// same; tests need not wait half a second per retry).
fn settings(standin: &StandIn) -> CloudSettings {
    let mut s = CloudSettings::with_urls(&standin.provisioning_url(), &standin.api_url())
        .unwrap_or_else(|e| panic!("{e}"));
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(100);
    s
}

fn client(settings: CloudSettings, key: &str) -> CloudClient {
    let key = ApiKey::new(key, "test").unwrap_or_else(|e| panic!("{e}"));
    CloudClient::new(settings, key).unwrap_or_else(|e| panic!("{e}"))
}

fn certificate_pem() -> String {
    testkit::fixtures::OPENSSL_CA_PEM.to_string()
}

fn onboard_row(id: &str) -> OnboardRow {
    OnboardRow {
        device_id: id.into(),
        sub_type: "station-7".into(),
        tags: vec!["line-3".into(), "batch-42".into()],
        fw_types: vec!["APP".into(), "MODEM".into()],
        certificate_pem: certificate_pem(),
    }
}

#[tokio::test]
async fn dry_run_202_vouches_for_a_known_device() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    let client = client(settings(&cloud), KEY);
    let text = token(1, &key);

    let result = client.claim_dry_run(&text).await;

    assert_eq!(result, Ok(()));
    let sent = cloud.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(
        sent[0].path_and_query,
        "/provisioning/v1/claimed-devices?dryrun=true"
    );
    assert_eq!(sent[0].key, KeySeen::Correct);
    assert_eq!(sent[0].content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value =
        serde_json::from_slice(&sent[0].body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body, serde_json::json!({ "claimToken": text }));
    assert!(cloud.claimed().is_empty(), "a dry run claims nothing");
}

#[tokio::test]
async fn dry_run_400_carries_nrf_clouds_message_and_is_not_retried() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(2), Verdict::Reject("Device is revoked".into()));
    let client = client(settings(&cloud), KEY);

    let unknown = client.claim_dry_run(&token(1, &key)).await;
    let revoked = client.claim_dry_run(&token(2, &key)).await;

    match &unknown {
        Err(CloudError::Rejected {
            status: 400,
            message,
        }) => {
            assert!(message.contains(&device_uuid(1).to_string()), "{message}");
            assert!(
                message.contains("not in the trusted device database"),
                "{message}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(
        revoked,
        Err(CloudError::Rejected {
            status: 400,
            message: "Device is revoked".into()
        })
    );
    let reason = revoked.err().map(|e| e.reason().code());
    assert_eq!(reason, Some("cloud_rejected"));
    assert_eq!(
        cloud.requests().len(),
        2,
        "one request per call: 4xx is never retried"
    );
}

#[tokio::test]
async fn wrong_api_key_is_unauthorized_not_retried_and_not_shown() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    let client = client(settings(&cloud), "wrong-key-value-1234");

    let result = client.claim_dry_run(&token(1, &key)).await;

    let Err(error) = result else {
        panic!("a wrong key passed")
    };
    assert!(
        matches!(error, CloudError::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("API key"), "{error}");
    assert!(!error.to_string().contains("wrong-key-value"), "{error}");
    assert!(!format!("{client:?}").contains("wrong-key-value"));
    assert_eq!(
        error.reason().code(),
        "cloud_unreachable",
        "no verdict on the device"
    );
    assert!(error.is_configuration());
    let sent = cloud.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key, KeySeen::Wrong);
}

#[tokio::test]
async fn retry_after_on_429_is_waited_out_before_the_retry() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(
        Endpoint::ClaimDryRun,
        Fault::Status {
            status: 429,
            retry_after: Some("1".into()),
        },
        1,
    );
    let client = client(settings(&cloud), KEY);

    let result = client.claim_dry_run(&token(1, &key)).await;

    assert_eq!(result, Ok(()));
    let sent = cloud.requests();
    assert_eq!(sent.len(), 2);
    let gap = sent[1].at.duration_since(sent[0].at);
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, asked 1 s"
    );
}

#[tokio::test]
async fn retry_after_longer_than_the_limit_ends_the_call_without_retrying_early() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(
        Endpoint::ClaimDryRun,
        Fault::Status {
            status: 503,
            retry_after: Some("3600".into()),
        },
        1,
    );
    let client = client(settings(&cloud), KEY);

    let result = client.claim_dry_run(&token(1, &key)).await;

    match result {
        Err(CloudError::Unreachable { attempts: 1, last }) => {
            assert!(last.contains("3600"), "{last}");
        }
        other => panic!("expected Unreachable after 1 attempt, got {other:?}"),
    }
    assert_eq!(cloud.requests().len(), 1);
}

#[tokio::test]
async fn server_error_then_success_passes() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(
        Endpoint::ClaimDryRun,
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        1,
    );
    let client = client(settings(&cloud), KEY);

    assert_eq!(client.claim_dry_run(&token(1, &key)).await, Ok(()));
    assert_eq!(cloud.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_until_the_attempts_run_out_are_unreachable() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(
        Endpoint::ClaimDryRun,
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        10,
    );
    let mut s = settings(&cloud);
    s.max_attempts = 3;
    let client = client(s, KEY);

    let result = client.claim_dry_run(&token(1, &key)).await;

    let Err(error) = result else {
        panic!("passed on 500s")
    };
    match &error {
        CloudError::Unreachable { attempts: 3, last } => assert!(last.contains("500"), "{last}"),
        other => panic!("expected Unreachable after 3 attempts, got {other:?}"),
    }
    assert_eq!(error.reason().code(), "cloud_unreachable");
    assert_eq!(cloud.requests().len(), 3);
}

#[tokio::test]
async fn slow_answer_past_the_timeout_is_unreachable_after_the_retries() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(
        Endpoint::ClaimDryRun,
        Fault::Delay(Duration::from_secs(2)),
        10,
    );
    let mut s = settings(&cloud);
    s.request_timeout = Duration::from_millis(200);
    s.max_attempts = 2;
    let client = client(s, KEY);

    let result = client.claim_dry_run(&token(1, &key)).await;

    match result {
        Err(CloudError::Unreachable { attempts: 2, last }) => {
            assert!(last.contains("no answer within"), "{last}");
        }
        other => panic!("expected Unreachable after 2 attempts, got {other:?}"),
    }
    assert_eq!(cloud.requests().len(), 2);
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port()
    };
    let base = format!("http://127.0.0.1:{port}/v1/");
    let mut s = CloudSettings::with_urls(&base, &base).unwrap_or_else(|e| panic!("{e}"));
    s.backoff_base = Duration::from_millis(10);
    s.max_attempts = 3;
    let client = client(s, KEY);

    let result = client.claim_dry_run("AAAA.BBBB").await;

    match result {
        Err(CloudError::Unreachable { attempts: 3, last }) => {
            assert!(last.to_lowercase().contains("refused"), "{last}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn https_with_an_untrusted_certificate_is_unreachable_never_a_pass() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_rustls::rustls::{self, pki_types};

    // A self-signed certificate no system trust store holds.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let ca = nrf_provd_core::ca::StationCa::generate(
        "nrf-provd test server",
        Duration::from_secs(86_400),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    ca.write(&cert_path, &key_path)
        .unwrap_or_else(|e| panic!("{e}"));
    let key_pem = std::fs::read_to_string(&key_path).unwrap_or_else(|e| panic!("{e}"));
    let (_, key_der) = der::pem::decode_vec(key_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_no_client_auth()
    .with_single_cert(
        vec![pki_types::CertificateDer::from(ca.certificate_der())],
        pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let hellos = Arc::new(AtomicUsize::new(0));
    let seen = hellos.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let start = tokio_rustls::LazyConfigAcceptor::new(
                    rustls::server::Acceptor::default(),
                    stream,
                );
                if let Ok(handshake) = start.await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = handshake.into_stream(acceptor.config().clone()).await;
                }
            });
        }
    });
    let base = format!("https://127.0.0.1:{port}/v1/");
    let mut s = CloudSettings::with_urls(&base, &base).unwrap_or_else(|e| panic!("{e}"));
    s.backoff_base = Duration::from_millis(10);
    s.max_attempts = 2;
    let client = client(s, KEY);

    let result = client.claim_dry_run("AAAA.BBBB").await;
    server.abort();

    match result {
        Err(CloudError::Unreachable { attempts: 2, last }) => {
            assert!(last.to_lowercase().contains("certificate"), "{last}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(
        hellos.load(Ordering::SeqCst),
        2,
        "one TLS ClientHello per attempt"
    );
}

#[tokio::test]
async fn connection_closed_without_an_answer_is_retried() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(Endpoint::ClaimDryRun, Fault::Close, 1);
    let client = client(settings(&cloud), KEY);

    assert_eq!(client.claim_dry_run(&token(1, &key)).await, Ok(()));
    assert_eq!(cloud.requests().len(), 2);
}

#[tokio::test]
async fn answers_outside_the_contract_never_pass() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    let client = client(settings(&cloud), KEY);
    let text = token(1, &key);
    let body = |status: u16, content_type: &str, body: &[u8]| Fault::Body {
        status,
        content_type: content_type.into(),
        body: body.to_vec(),
    };
    // A dry run passes on 202 only.
    for fault in [
        body(200, "application/json", b"{}"),
        body(204, "application/json", b""),
        body(302, "text/html", b"<html>moved</html>"),
    ] {
        cloud.fault(Endpoint::ClaimDryRun, fault.clone(), 1);
        let result = client.claim_dry_run(&text).await;
        assert!(
            matches!(result, Err(CloudError::Malformed { .. })),
            "{fault:?}: {result:?}"
        );
    }
    // A 400 without JSON still says what nRF Cloud said, or the status.
    cloud.fault(
        Endpoint::ClaimDryRun,
        body(400, "text/html", b"<h1>Bad</h1>\n"),
        1,
    );
    assert_eq!(
        client.claim_dry_run(&text).await,
        Err(CloudError::Rejected {
            status: 400,
            message: "<h1>Bad</h1>".into()
        })
    );
    cloud.fault(Endpoint::ClaimDryRun, body(400, "application/json", b""), 1);
    assert_eq!(
        client.claim_dry_run(&text).await,
        Err(CloudError::Rejected {
            status: 400,
            message: "HTTP 400 Bad Request".into()
        })
    );
    // A success body past the 1 MiB cap is refused, not read whole.
    let huge = vec![b' '; 3 << 20];
    cloud.fault(Endpoint::BulkClaim, body(200, "application/json", &huge), 1);
    let rows = [ClaimRow {
        token: text.clone(),
        tags: vec![],
    }];
    match client.bulk_claim(&rows).await {
        Err(CloudError::Malformed {
            status: 200,
            detail,
        }) => {
            assert!(detail.contains("longer than"), "{detail}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_on_a_bulk_answer_is_malformed_and_not_retried() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    cloud.fault(Endpoint::BulkClaim, Fault::MalformedJson, 1);
    let client = client(settings(&cloud), KEY);
    let rows = [ClaimRow {
        token: token(1, &key),
        tags: vec![],
    }];

    let result = client.bulk_claim(&rows).await;

    let Err(error) = result else {
        panic!("malformed JSON was accepted")
    };
    assert!(
        matches!(error, CloudError::Malformed { status: 200, .. }),
        "{error:?}"
    );
    assert_eq!(error.reason().code(), "cloud_unreachable");
    assert_eq!(cloud.requests().len(), 1);
}

/// Rows 0, 2 and 4 are known; 1 is not in the database; 3 is revoked.
async fn bulk_claim_five(shape: FailedShape) -> (StandIn, Vec<ClaimRow>, nrf_cloud::BulkClaim) {
    let cloud = standin(StandInConfig {
        failed_shape: shape,
        ..StandInConfig::default()
    })
    .await;
    let key = signing_key();
    for n in [0, 2, 4] {
        cloud.add_device(device_uuid(n), Verdict::Accept);
    }
    cloud.add_device(device_uuid(3), Verdict::Reject("Device is revoked".into()));
    let client = client(settings(&cloud), KEY);
    let rows: Vec<ClaimRow> = (0..5)
        .map(|n| ClaimRow {
            token: token(n, &key),
            tags: vec!["nrf-cloud-onboarding".into(), "line=3".into()],
        })
        .collect();
    let result = client
        .bulk_claim(&rows)
        .await
        .unwrap_or_else(|e| panic!("bulk claim: {e}"));
    (cloud, rows, result)
}

fn assert_five_rows(result: &nrf_cloud::BulkClaim) {
    let outcomes: Vec<&RowOutcome> = result.rows.iter().map(|r| &r.outcome).collect();
    assert_eq!(outcomes[0], &RowOutcome::Done);
    assert!(
        matches!(outcomes[1], RowOutcome::Failed(m) if m.contains("not in the trusted device database")),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], &RowOutcome::Done);
    assert_eq!(outcomes[3], &RowOutcome::Failed("Device is revoked".into()));
    assert_eq!(outcomes[4], &RowOutcome::Done);
    assert_eq!(result.claimed(), 3);
    assert!(
        result.unmatched_failures.is_empty(),
        "{:?}",
        result.unmatched_failures
    );
    for (n, row) in result.rows.iter().enumerate() {
        assert_eq!(row.row, n);
        assert_eq!(row.device_uuid, Some(device_uuid(n as u128)));
    }
}

#[tokio::test]
async fn bulk_claim_with_some_rows_failed_says_what_happened_per_row() {
    let (cloud, rows, result) = bulk_claim_five(FailedShape::Objects).await;

    assert_five_rows(&result);
    let claimed = cloud.claimed();
    assert_eq!(claimed.len(), 3);
    assert_eq!(
        claimed[&device_uuid(2)].tags,
        vec!["nrf-cloud-onboarding".to_string(), "line=3".to_string()]
    );
    let sent = cloud.requests_to(Endpoint::BulkClaim);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path_and_query, "/provisioning/v1/claimed-devices");
    assert_eq!(sent[0].content_type.as_deref(), Some("text/csv"));
    let expected: String = rows
        .iter()
        .map(|r| format!("\"{}\",\"nrf-cloud-onboarding,line=3\"\n", r.token))
        .collect();
    assert_eq!(String::from_utf8_lossy(&sent[0].body), expected);
}

#[tokio::test]
async fn bulk_claim_failures_listed_as_row_strings_are_tied_to_rows() {
    let (_cloud, _rows, result) = bulk_claim_five(FailedShape::Strings).await;
    assert_five_rows(&result);
}

#[tokio::test]
async fn bulk_claim_of_1001_rows_is_refused_before_sending() {
    let cloud = standin(StandInConfig::default()).await;
    let client = client(settings(&cloud), KEY);
    let rows = vec![
        ClaimRow {
            token: "AAAA.BBBB".into(),
            tags: vec![],
        };
        1001
    ];

    let result = client.bulk_claim(&rows).await;

    assert_eq!(
        result,
        Err(CloudError::TooManyRows {
            rows: 1001,
            max: 1000
        })
    );
    assert!(cloud.requests().is_empty(), "nothing may be sent");
}

#[tokio::test]
async fn single_claim_records_tags_and_a_second_claim_is_refused() {
    let cloud = standin(StandInConfig::default()).await;
    let key = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    let client = client(settings(&cloud), KEY);
    let text = token(1, &key);
    let tags = vec!["nrf-cloud-onboarding".to_string()];

    let first = client.claim(&text, &tags).await;
    let second = client.claim(&text, &tags).await;
    let dry_run_after = client.claim_dry_run(&text).await;

    let id = device_uuid(1).to_string();
    assert_eq!(first.map(|d| d.id), Ok(Some(id)));
    assert!(
        matches!(second, Err(CloudError::Rejected { status: 409, .. })),
        "{second:?}"
    );
    assert!(matches!(
        dry_run_after,
        Err(CloudError::Rejected { status: 409, .. })
    ));
    assert_eq!(cloud.claimed()[&device_uuid(1)].tags, tags);
}

#[tokio::test]
async fn onboarding_is_followed_to_succeeded() {
    let cloud = standin(StandInConfig::default()).await;
    let client = client(settings(&cloud), KEY);
    let ids = [
        "nrf-352656100367872",
        "nrf-352656100367880",
        "nrf-352656100367898",
    ];
    let rows: Vec<OnboardRow> = ids.iter().map(|id| onboard_row(id)).collect();

    let op_id = client
        .onboard(&rows)
        .await
        .unwrap_or_else(|e| panic!("onboard: {e}"));
    let op = client
        .wait_bulk_op(&op_id, Duration::from_millis(20), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("wait: {e}"));

    assert_eq!(op.id, op_id);
    assert_eq!(op.status, BulkOpStatus::Succeeded);
    assert!(op.errors.is_empty());
    for row in 0..3 {
        assert_eq!(op.row_outcome(row), RowOutcome::Done);
    }
    assert_eq!(cloud.onboarded(), ids.to_vec());
    // PENDING, IN_PROGRESS, SUCCEEDED
    assert_eq!(cloud.requests_to(Endpoint::BulkOp).len(), 3);
    let sent = &cloud.requests_to(Endpoint::Onboard)[0];
    assert_eq!(sent.path_and_query, "/api/v1/devices");
    assert_eq!(sent.content_type.as_deref(), Some("text/csv"));
    let csv = String::from_utf8_lossy(&sent.body);
    let pem = certificate_pem();
    assert!(
        csv.starts_with(&format!(
            "nrf-352656100367872,station-7,line-3|batch-42,APP|MODEM,\"{}\"\n",
            pem.trim()
        )),
        "{csv}"
    );
}

#[tokio::test]
async fn onboarding_with_malformed_device_ids_fails_those_rows() {
    let cloud = standin(StandInConfig::default()).await;
    let client = client(settings(&cloud), KEY);
    let rows = vec![
        onboard_row("nrf-352656100367872"),
        onboard_row("Not A Valid Id!"),
        onboard_row("nrf-352656100367898"),
    ];

    let op_id = client
        .onboard(&rows)
        .await
        .unwrap_or_else(|e| panic!("onboard: {e}"));
    let op = client
        .wait_bulk_op(&op_id, Duration::from_millis(20), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("wait: {e}"));

    assert_eq!(op.status, BulkOpStatus::Failed);
    assert_eq!(op.errors_unavailable, None);
    assert_eq!(op.errors.len(), 1, "{:?}", op.errors);
    assert_eq!(op.errors[0].row, Some(1));
    assert!(
        op.errors[0].message.contains("Invalid device id"),
        "{:?}",
        op.errors
    );
    assert_eq!(op.row_outcome(0), RowOutcome::Done);
    assert!(matches!(op.row_outcome(1), RowOutcome::Failed(_)));
    assert_eq!(op.row_outcome(2), RowOutcome::Done);
    assert_eq!(
        cloud.onboarded(),
        vec![
            "nrf-352656100367872".to_string(),
            "nrf-352656100367898".to_string()
        ]
    );
    // The error summary is a separate download: the key is not sent there.
    let summary = cloud.requests_to(Endpoint::ErrorSummary);
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].key, KeySeen::Missing);
}

#[tokio::test]
async fn waiting_for_a_bulk_operation_stops_at_the_deadline() {
    let cloud = standin(StandInConfig {
        polls_to_finish: 1000,
        ..StandInConfig::default()
    })
    .await;
    let client = client(settings(&cloud), KEY);
    let op_id = client
        .onboard(&[onboard_row("nrf-1")])
        .await
        .unwrap_or_else(|e| panic!("onboard: {e}"));

    let result = client
        .wait_bulk_op(
            &op_id,
            Duration::from_millis(20),
            Duration::from_millis(200),
        )
        .await;

    match result {
        Err(CloudError::StillRunning { id, status, .. }) => {
            assert_eq!(id, op_id);
            assert_eq!(status, "IN_PROGRESS");
        }
        other => panic!("expected StillRunning, got {other:?}"),
    }
    assert!(cloud.onboarded().is_empty());
}

#[tokio::test]
async fn a_real_modems_attestation_token_names_its_device_to_the_stand_in() {
    let fixture: serde_json::Value = serde_json::from_str(testkit::fixtures::REAL_MODEM_TOKENS)
        .unwrap_or_else(|e| panic!("{e}"));
    let attest = fixture["attest"]["token"].as_str().unwrap_or_default();
    let keygen = fixture["keygen_csr"]["token"].as_str().unwrap_or_default();
    let cloud = standin(StandInConfig::default()).await;
    let real = Uuid::from_u128(0x50363154_3931_44f0_8022_121b6401627d);
    cloud.add_device(real, Verdict::Accept);
    let client = client(settings(&cloud), KEY);

    assert_eq!(client.claim_dry_run(attest).await, Ok(()));
    let keygen_as_claim = client.claim_dry_run(keygen).await;
    assert!(
        matches!(&keygen_as_claim, Err(CloudError::Rejected { status: 400, message }) if message.contains("Invalid claim token")),
        "{keygen_as_claim:?}"
    );
}

#[test]
fn api_key_file_readable_by_others_is_refused_and_0600_accepted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nrfcloud.key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap_or_else(|e| panic!("{e}"));
    let chmod = |mode| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"))
    };

    chmod(0o644);
    let refused = ApiKey::from_file(&path);
    chmod(0o600);
    let accepted = ApiKey::from_file(&path);

    let Err(error) = refused else {
        panic!("a 0644 key file was accepted")
    };
    assert!(
        matches!(
            error,
            ApiKeyError::Unsafe(UnsafeFile::Readable { mode: 0o644, .. })
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    assert!(!text.contains(KEY));
    let key = accepted.unwrap_or_else(|e| panic!("0600 refused: {e}"));
    assert!(!format!("{key:?}").contains(KEY));
    assert!(!format!("{key}").contains(KEY));
    assert!(format!("{key:?}").contains("nrfcloud.key"));
}

#[tokio::test]
async fn key_from_a_file_is_sent_trimmed_as_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nrfcloud.key");
    std::fs::write(&path, format!("{KEY}\n\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let cloud = standin(StandInConfig::default()).await;
    let signing = signing_key();
    cloud.add_device(device_uuid(1), Verdict::Accept);
    let key = ApiKey::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let client = CloudClient::new(settings(&cloud), key).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(client.claim_dry_run(&token(1, &signing)).await, Ok(()));
    assert_eq!(cloud.requests()[0].key, KeySeen::Correct);
}

#[test]
fn empty_key_file_and_missing_variable_are_refused_with_their_names() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("empty.key");
    std::fs::write(&path, "\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));

    let empty = ApiKey::from_file(&path)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let missing = ApiKey::from_env("NRF_PROVD_TEST_NO_SUCH_VARIABLE")
        .map(|_| ())
        .map_err(|e| e.to_string());

    assert!(
        matches!(&empty, Err(m) if m.contains("empty.key") && m.contains("empty")),
        "{empty:?}"
    );
    assert!(
        matches!(&missing, Err(m) if m.contains("NRF_PROVD_TEST_NO_SUCH_VARIABLE")),
        "{missing:?}"
    );
}
