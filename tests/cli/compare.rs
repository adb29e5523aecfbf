//! `s3.compare` against the real things where they have what is checked: the settings
//! (replication rules, public access block, ownership, encryption, versioning) on moto,
//! which keeps them as AWS does (SeaweedFS has no replication or public-access-block
//! API), and the listing diff on two real SeaweedFS buckets.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::types::{
    BucketVersioningStatus, Destination, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
    PublicAccessBlockConfiguration, ReplicationConfiguration, ReplicationRule,
    ReplicationRuleFilter, ReplicationRuleStatus, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    VersioningConfiguration,
};

use crate::support::s3::{S3Server, with_credentials};
use crate::support::{drrun, run_cmd, wait_for};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let bin = std::env::var("DRRUN_TEST_MOTO").expect(
            "DRRUN_TEST_MOTO names moto_server (PyPI moto[server]; scripts/test installs it)",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let ready = wait_for(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(ready, "moto did not start");
        Self { child, endpoint }
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test");
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::new()
                .behavior_version_latest()
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .endpoint_url(&self.endpoint)
                .force_path_style(true)
                .credentials_provider(creds)
                .build(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Default encryption (AES256) on `bucket`.
async fn encrypt(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn compare(dir: &Path, endpoint: &str, with: &str, creds: (&str, &str)) -> crate::support::Out {
    let pb = dir.join("compare.yaml");
    std::fs::write(
        &pb,
        format!(
            "version: 1\nname: compare\nsteps:\n  assets:\n    kind: s3.compare\n    with:\n      endpoint: \"{endpoint}\"\n      path_style: true\n      region: us-east-1\n{with}"
        ),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let mut cmd = drrun();
    cmd.current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", creds.0)
        .env("AWS_SECRET_ACCESS_KEY", creds.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .arg(&pb)
        .arg("--state-dir")
        .arg(dir.join("state"));
    run_cmd(&mut cmd)
}

#[test]
fn bucket_settings_parity_replication_and_expectations_on_moto() {
    let moto = Moto::start();
    let s3 = moto.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for b in ["acme-assets", "acme-assets-dr", "acme-hosting-services"] {
            s3.create_bucket().bucket(b).send().await.unwrap();
        }
        for b in ["acme-assets", "acme-assets-dr"] {
            s3.put_bucket_versioning()
                .bucket(b)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            s3.put_public_access_block()
                .bucket(b)
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            s3.put_bucket_ownership_controls()
                .bucket(b)
                .ownership_controls(
                    OwnershipControls::builder()
                        .rules(
                            OwnershipControlsRule::builder()
                                .object_ownership(ObjectOwnership::BucketOwnerEnforced)
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
        // Only the source is encrypted by default: "the same as the source" does not hold.
        encrypt(&s3, "acme-assets").await;
        s3.put_bucket_replication()
            .bucket("acme-assets")
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role("arn:aws:iam::123456789012:role/replication")
                    .rules(
                        ReplicationRule::builder()
                            .id("assets-to-dr")
                            .status(ReplicationRuleStatus::Enabled)
                            .priority(1)
                            .filter(ReplicationRuleFilter::builder().prefix("").build())
                            .destination(
                                Destination::builder()
                                    .bucket("arn:aws:s3:::acme-assets-dr")
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let creds = ("testing", "testing");
    let parity = "      bucket: acme-assets\n      copy: { bucket: acme-assets-dr }\n";
    let out = compare(dir.path(), &moto.endpoint, parity, creds);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("default encryption differs: acme-assets AES256, acme-assets-dr not set"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "replication rule `assets-to-dr` copies acme-assets to acme-assets-dr, enabled"
        ),
        "{}",
        out.stderr
    );
    // Make the copy match; now it passes, and plan (read only) says the same.
    rt.block_on(async {
        encrypt(&s3, "acme-assets-dr").await;
    });
    let out = compare(dir.path(), &moto.endpoint, parity, creds);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("versioning the same: Enabled"),
        "{}",
        out.stderr
    );
    // Read only: `plan` runs the same comparison.
    let plan = run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("AWS_ACCESS_KEY_ID", creds.0)
            .env("AWS_SECRET_ACCESS_KEY", creds.1)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
            .arg("plan")
            .arg(dir.path().join("compare.yaml")),
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("default encryption the same: AES256")
            && plan.stdout.contains(
                "replication rule `assets-to-dr` copies acme-assets to acme-assets-dr, enabled"
            ),
        "{}",
        plan.stdout
    );

    // A replication rule to somewhere else is not one to the DR copy.
    let elsewhere = "      bucket: acme-assets\n      copy: { bucket: acme-hosting-services }\n";
    let out = compare(dir.path(), &moto.endpoint, elsewhere, creds);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no replication rule of acme-assets leads to acme-hosting-services"),
        "{}",
        out.stderr
    );

    // The hosting-services bucket against expectations: versioning, encryption, no public access.
    let expect = "      bucket: acme-hosting-services\n      expect: { versioning: true, encryption: true, public_access_blocked: true }\n";
    let out = compare(dir.path(), &moto.endpoint, expect, creds);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("acme-hosting-services: versioning is not set")
            && out
                .stderr
                .contains("acme-hosting-services: public access is not set"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_listing_diff_finds_missing_and_altered_objects_in_a_real_copy() {
    let server = S3Server::start();
    let s3 = server.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for b in ["assets", "assets-dr"] {
            s3.create_bucket().bucket(b).send().await.unwrap();
        }
        for i in 0..5 {
            let key = format!("media/images/photo{i}.jpg");
            let body = format!("jpeg bytes {i}");
            s3.put_object()
                .bucket("assets")
                .key(&key)
                .body(body.clone().into_bytes().into())
                .send()
                .await
                .unwrap();
            match i {
                // Never replicated.
                3 => {}
                // Replicated, then altered in the copy.
                4 => {
                    s3.put_object()
                        .bucket("assets-dr")
                        .key(&key)
                        .body(b"truncated".to_vec().into())
                        .send()
                        .await
                        .unwrap();
                }
                _ => {
                    s3.put_object()
                        .bucket("assets-dr")
                        .key(&key)
                        .body(body.into_bytes().into())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let creds = (
        crate::support::s3::ACCESS_KEY,
        crate::support::s3::SECRET_KEY,
    );
    let with = "      bucket: assets\n      prefix: media/\n      copy: { bucket: assets-dr }\n      settings: false\n      keys: [media/images/photo0.jpg]\n";
    let out = compare(dir.path(), &server.endpoint(), with, creds);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("5 object(s) under s3://assets/media/, 4 in the copy s3://assets-dr/media/: 1 missing, 1 differing")
            && out.stderr.contains("media/images/photo3.jpg missing")
            && out.stderr.contains("media/images/photo4.jpg (12 bytes, copy 9 bytes) differs")
            && out.stderr.contains("s3://assets-dr/media/images/photo0.jpg is there"),
        "{}",
        out.stderr
    );
    // Tolerated by max_missing, it passes, with the counts in its outputs.
    let tolerant = format!("{with}      max_missing: 2\n");
    let out = compare(dir.path(), &server.endpoint(), &tolerant, creds);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let _ = with_credentials;
}
