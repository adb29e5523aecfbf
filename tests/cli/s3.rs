//! `s3.fetch` against a real `SeaweedFS` server.

use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use crate::support::s3::{S3Server, with_credentials};
use crate::support::{drrun, journal, run_cmd, wait_for};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn put(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) {
    rt.block_on(async {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    });
}

fn bucket(rt: &tokio::runtime::Runtime, s3: &aws_sdk_s3::Client, name: &str) {
    rt.block_on(async { s3.create_bucket().bucket(name).send().await.unwrap() });
}

fn stamp(hours_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours_ago))
        .format("%Y%m%d%H%M")
        .to_string()
}

fn fetch_playbook(
    dir: &Path,
    server: &S3Server,
    with: &str,
    step_extra: &str,
) -> std::path::PathBuf {
    let dest = if with.contains("dest:") {
        String::new()
    } else {
        format!("dest: {}/", dir.join("downloads").display())
    };
    let text = format!(
        r"
version: 1
name: fetch
objectives: {{ rpo: 26h }}
steps:
  backup:
    kind: s3.fetch
    {step_extra}
    with:
      endpoint: {}
      path_style: true
      region: us-east-1
      {dest}
      {with}
",
        server.endpoint(),
    );
    let path = dir.join("fetch.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn drrun_s3(dir: &Path, args: &[&std::ffi::OsStr]) -> std::process::Command {
    let mut cmd = drrun();
    with_credentials(cmd.current_dir(dir), dir).args(args);
    cmd
}

fn fetch(dir: &Path, pb: &Path) -> crate::support::Out {
    let state = dir.join("state");
    run_cmd(&mut drrun_s3(
        dir,
        &[pb.as_os_str(), "--state-dir".as_ref(), state.as_os_str()],
    ))
}

fn outputs(dir: &Path) -> serde_json::Value {
    journal(&dir.join("state"))
        .into_iter()
        .rev()
        .find(|r| r["type"] == "step_succeeded")
        .map(|r| r["outputs"].clone())
        .unwrap_or_default()
}

#[test]
fn selects_the_newest_backup_among_thousands_of_keys_and_refuses_stale_ones() {
    let server = S3Server::start();
    let s3 = server.client();
    let rt = rt();
    bucket(&rt, &s3, "acme-hosting-services");
    // 1,100 old backups (more than one listing page), then the newest, which sorts last.
    rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(0..1100)
            .map(|i| {
                let s3 = s3.clone();
                async move {
                    let key = format!("acme/daily-acme-{}.pgdump", stamp(100 + i));
                    s3.put_object()
                        .bucket("acme-hosting-services")
                        .key(key)
                        .body(vec![b'o'; 10].into())
                        .send()
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });
    let newest_key = format!("acme/daily-acme-{}.pgdump", stamp(2));
    let newest_body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put(
        &rt,
        &s3,
        "acme-hosting-services",
        &newest_key,
        newest_body.clone(),
    );
    // Keys that almost match: an impossible month, no timestamp, another extension.
    put(
        &rt,
        &s3,
        "acme-hosting-services",
        "acme/daily-acme-209913010000.pgdump",
        b"bad month".to_vec(),
    );
    put(
        &rt,
        &s3,
        "acme-hosting-services",
        "acme/daily-acme-latest.pgdump",
        b"no ts".to_vec(),
    );
    put(
        &rt,
        &s3,
        "acme-hosting-services",
        &format!("acme/daily-acme-{}.txt", stamp(1)),
        b"notes".to_vec(),
    );

    let dir = tempfile::tempdir().unwrap();
    let pb = fetch_playbook(
        dir.path(),
        &server,
        r#"bucket: acme-hosting-services
      prefix: acme/daily-
      match: '\.pgdump$'
      max_age: "{{ objectives.rpo }}"
      min_size: 1MB
      part_size: 1MiB"#,
        "",
    );
    // `plan` lists and selects read-only.
    let plan = run_cmd(&mut drrun_s3(
        dir.path(),
        &["plan".as_ref(), pb.as_os_str()],
    ));
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(&format!(
            "would download s3://acme-hosting-services/{newest_key}"
        )),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("(max_age 26h: ok)"), "{}", plan.stdout);
    assert!(
        !dir.path().join("downloads").exists(),
        "plan downloads nothing"
    );

    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let o = outputs(dir.path());
    assert_eq!(o["key"], newest_key);
    assert_eq!(o["size"], 3_000_000);
    assert_eq!(o["sha256"], hex::encode(sha2::Sha256::digest(&newest_body)));
    assert_eq!(
        std::fs::read(o["path"].as_str().unwrap()).unwrap(),
        newest_body
    );
    assert!(
        o["backup_time"]
            .as_str()
            .unwrap()
            .starts_with(&chrono::Utc::now().format("%Y-").to_string())
    );
    assert!(out.stderr.contains("among 1104 listed"), "{}", out.stderr);

    // newest-last-modified picks the last upload, whatever its name says.
    put(
        &rt,
        &s3,
        "acme-hosting-services",
        "acme/daily-acme-201001010000.pgdump",
        vec![b'x'; 2_000_000],
    );
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: acme-hosting-services\n      prefix: acme/daily-\n      select: newest-last-modified",
        "",
    );
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        outputs(dir.path())["key"],
        "acme/daily-acme-201001010000.pgdump"
    );

    // A backup older than max_age is refused before any byte is downloaded.
    bucket(&rt, &s3, "stale");
    put(
        &rt,
        &s3,
        "stale",
        &format!("acme/daily-acme-{}.pgdump", stamp(30)),
        vec![b's'; 10],
    );
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: stale\n      prefix: acme/\n      max_age: 26h\n      dest: stale-downloads/",
        "",
    );
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("old, older than max_age 26h"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("stale-downloads").exists());

    // Nothing matches: the error lists what was found.
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: acme-hosting-services\n      prefix: acme/daily-\n      match: 'weekly'",
        "",
    );
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("no object under s3://acme-hosting-services/acme/daily- matches /weekly/"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("found e.g. acme/daily-acme-"),
        "{}",
        out.stderr
    );

    // Wrong credentials: access denied, naming the principal but not the secret.
    let out = run_cmd(
        drrun_s3(dir.path(), &[pb.as_os_str()])
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .env("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONG1234"),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("access denied") && out.stderr.contains("AKIA…1234"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not-the-secret"));
}

/// Leaves the state a crash mid-download leaves: no finished file, `bytes` as the partial
/// file, and a progress record claiming them verified for the object version `etag`.
fn leave_partial(
    dir: &Path,
    path: &str,
    bucket: &str,
    key: &str,
    etag: &str,
    size: usize,
    bytes: &[u8],
) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(format!("{path}.drrun.json"));
    std::fs::write(format!("{path}.drrun-part"), bytes).unwrap();
    std::fs::write(
        format!("{path}.drrun-part.json"),
        serde_json::json!({
            "bucket": bucket, "key": key, "etag": etag, "version_id": null,
            "size": size, "verified": bytes.len(),
        })
        .to_string(),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(dir.join("state"));
}

#[test]
fn a_256_mib_download_survives_the_server_dying_and_detects_corruption() {
    let mut server = S3Server::start();
    let s3 = server.client();
    let rt = rt();
    bucket(&rt, &s3, "big");
    let body: Vec<u8> = (0..256u64 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expected = hex::encode(sha2::Sha256::digest(&body));
    put(&rt, &s3, "big", "acme/daily-acme-big.pgdump", body);
    let dir = tempfile::tempdir().unwrap();
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: big\n      key: acme/daily-acme-big.pgdump\n      concurrency: 2\n      part_size: 4MiB",
        "retry: { attempts: 30, backoff: 500ms, max_backoff: 1s, on: [connection, throttled, ambiguous, timeout] }",
    );
    let state = dir.path().join("state");
    let child = drrun_s3(
        dir.path(),
        &[pb.as_os_str(), "--state-dir".as_ref(), state.as_os_str()],
    )
    // No terminal here, as under cron: progress comes as lines at this interval.
    .env("DRRUN_PROGRESS_EVERY", "200ms")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Kill the server once some of the file is on disk and verified.
    let meta = dir
        .path()
        .join("downloads/daily-acme-big.pgdump.drrun-part.json");
    let progressed = wait_for(Duration::from_secs(60), || {
        std::fs::read(&meta)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|m| m["verified"].as_u64().unwrap_or(0) > 0)
    });
    assert!(progressed, "the download started");
    server.kill();
    // Keep it down until the step's attempt has failed (the SDK's own retries ride out a
    // short outage), so the next attempt must resume from the bytes on disk.
    let failed_once = wait_for(Duration::from_secs(120), || {
        journal(&state).iter().any(|r| r["type"] == "step_retrying")
    });
    assert!(failed_once, "the attempt failed while the server was down");
    server.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("resuming the download at"),
        "resumed, not restarted: {stderr}"
    );
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("backup (s3.fetch): downloading s3://big/acme/daily-acme-big.pgdump, ")
        })
        .collect();
    assert!(
        progress.iter().any(|l| l.contains(" MiB of 256.0 MiB (")
            && l.contains("/s")
            && l.contains(" so far")),
        "a long transfer prints its bytes, rate and time without a terminal: {stderr}"
    );
    let o = outputs(dir.path());
    assert_eq!(o["sha256"], expected);
    assert_eq!(o["size"], 256u64 << 20);
    let path = o["path"].as_str().unwrap().to_string();
    assert!(!Path::new(&format!("{path}.drrun-part")).exists());

    // A corrupted partial file (same object, wrong bytes) is caught by the ETag check,
    // removed, and never retried silently.
    let etag = o["etag"].as_str().unwrap();
    let key = "acme/daily-acme-big.pgdump";
    leave_partial(
        dir.path(),
        &path,
        "big",
        key,
        etag,
        256 << 20,
        &vec![0u8; 4 << 20],
    );
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("checksum mismatch")
            && out.stderr.contains("the partial file was removed"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("retry"),
        "a checksum mismatch is not retried: {}",
        out.stderr
    );
    assert!(!Path::new(&format!("{path}.drrun-part")).exists());
    // The next run starts clean and gets it right.
    std::fs::remove_dir_all(&state).unwrap();
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(outputs(dir.path())["sha256"], expected);
}

/// Uploads `body` as a multipart object (parts of `part` bytes), as `aws s3 cp` and s5cmd
/// do for large dumps: its `ETag` is not an md5, so only drrun's own sha256 vouches for it.
fn put_multipart(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    part: usize,
) -> String {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    rt.block_on(async {
        let upload = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let id = upload.upload_id().unwrap();
        let mut done = Vec::new();
        for (i, chunk) in body.chunks(part).enumerate() {
            let n = i as i32 + 1;
            let out = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .body(chunk.to_vec().into())
                .send()
                .await
                .unwrap();
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(out.e_tag().unwrap())
                    .build(),
            );
        }
        let out = s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.e_tag().unwrap().trim_matches('"').to_string()
    })
}

#[test]
fn a_replaced_multipart_backup_is_fetched_anew_never_spliced_onto_the_old_bytes() {
    let server = S3Server::start();
    let s3 = server.client();
    let rt = rt();
    bucket(&rt, &s3, "multipart");
    // Recent, so the playbook's RPO objective is met.
    let key = &format!("acme/daily-acme-{}.pgdump", stamp(3));
    let old: Vec<u8> = (0..24u32 << 20).map(|i| (i % 253) as u8).collect();
    let old_etag = put_multipart(&rt, &s3, "multipart", key, &old, 5 << 20);
    assert!(old_etag.contains('-'), "a multipart ETag: {old_etag}");
    let dir = tempfile::tempdir().unwrap();
    let pb = fetch_playbook(
        dir.path(),
        &server,
        &format!(
            "bucket: multipart\n      key: {key}\n      concurrency: 3\n      part_size: 1MiB"
        ),
        "",
    );
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let o = outputs(dir.path());
    assert_eq!(o["sha256"], hex::encode(sha2::Sha256::digest(&old)));
    assert_eq!(o["etag"], old_etag.as_str());
    let path = o["path"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), old, "the file is the object");

    // A crash left half of the old object on disk; then tonight's backup replaced it
    // under the same key. The partial bytes belong to another ETag: they must not be
    // resumed from, and the result is the new object exactly.
    let new: Vec<u8> = (0..24u32 << 20).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    let new_etag = put_multipart(&rt, &s3, "multipart", key, &new, 6 << 20);
    assert_ne!(new_etag, old_etag);
    let half = &old[..12 << 20];
    leave_partial(
        dir.path(),
        &path,
        "multipart",
        key,
        &old_etag,
        old.len(),
        half,
    );
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("resuming the download"),
        "bytes of another object version are not resumed from: {}",
        out.stderr
    );
    let o = outputs(dir.path());
    assert_eq!(o["sha256"], hex::encode(sha2::Sha256::digest(&new)));
    assert_eq!(o["etag"], new_etag.as_str());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        new,
        "the file is the new object"
    );
    assert!(!Path::new(&format!("{path}.drrun-part.json")).exists());

    // The same partial state, but of this very object version: resumed from the bytes
    // on disk, and still exactly the object.
    let half = &new[..12 << 20];
    leave_partial(
        dir.path(),
        &path,
        "multipart",
        key,
        &new_etag,
        new.len(),
        half,
    );
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("resuming the download at {} of", 12u32 << 20)),
        "{}",
        out.stderr
    );
    assert_eq!(
        outputs(dir.path())["sha256"],
        hex::encode(sha2::Sha256::digest(&new))
    );
    assert_eq!(std::fs::read(&path).unwrap(), new);
}

#[test]
fn a_download_killed_mid_way_is_resumed_from_the_bytes_on_disk() {
    let server = S3Server::start();
    let s3 = server.client();
    let rt = rt();
    bucket(&rt, &s3, "killed");
    let key = format!("acme/daily-acme-{}.pgdump", stamp(1));
    let body: Vec<u8> = (0..128u32 << 20)
        .map(|i| (i.wrapping_mul(40_503) >> 11) as u8)
        .collect();
    let etag = put_multipart(&rt, &s3, "killed", &key, &body, 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let pb = fetch_playbook(
        dir.path(),
        &server,
        &format!("bucket: killed\n      key: {key}\n      concurrency: 2\n      part_size: 1MiB"),
        "",
    );
    let state = dir.path().join("state");
    let mut child = drrun_s3(
        dir.path(),
        &[pb.as_os_str(), "--state-dir".as_ref(), state.as_os_str()],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // SIGKILL once a durability point has been recorded, well before the end.
    let meta = dir.path().join(format!(
        "downloads/{}.drrun-part.json",
        key.rsplit('/').next().unwrap()
    ));
    let verified = || {
        std::fs::read(&meta)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| m["verified"].as_u64())
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(60), || verified() > 0),
        "a durability point was recorded"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = verified();
    assert!(
        kept < body.len() as u64,
        "killed before the end ({kept} bytes verified)"
    );

    let out = run_cmd(drrun_s3(dir.path(), &[]).args([
        "resume".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("resuming the download at {kept} of")),
        "resumed from the {kept} verified bytes: {}",
        out.stderr
    );
    let o = outputs(dir.path());
    assert_eq!(o["sha256"], hex::encode(sha2::Sha256::digest(&body)));
    assert_eq!(o["etag"], etag.as_str());
    assert_eq!(std::fs::read(o["path"].as_str().unwrap()).unwrap(), body);
}

/// A real bucket holds more than dumps: an upload still being written, checksum files.
/// Under a plain prefix (no `match`), only whole backups are candidates, and the plan,
/// the notes and the outputs say what was ignored.
#[test]
fn an_upload_in_progress_is_never_chosen_as_the_newest_backup() {
    let server = S3Server::start();
    let s3 = server.client();
    let rt = rt();
    bucket(&rt, &s3, "proj-hosting-services");
    let complete = format!("proj/daily-proj-{}.pgdump", stamp(2));
    let partial = format!("proj/daily-proj-{}.pgdump.partial", stamp(1));
    let checksum = format!("proj/daily-proj-{}.pgdump.sha256", stamp(2));
    put(
        &rt,
        &s3,
        "proj-hosting-services",
        &complete,
        vec![b'c'; 20_000],
    );
    put(
        &rt,
        &s3,
        "proj-hosting-services",
        &partial,
        vec![b'p'; 1000],
    );
    put(
        &rt,
        &s3,
        "proj-hosting-services",
        &checksum,
        b"abc".to_vec(),
    );

    let dir = tempfile::tempdir().unwrap();
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: proj-hosting-services\n      prefix: proj/daily-\n      select: newest-key-timestamp",
        "",
    );
    let plan = run_cmd(&mut drrun_s3(
        dir.path(),
        &["plan".as_ref(), pb.as_os_str()],
    ));
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(&format!(
            "would download s3://proj-hosting-services/{complete}"
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("among 3 listed (1 backup; ignored: ")
            && plan.stdout.contains(&partial),
        "{}",
        plan.stdout
    );

    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let o = outputs(dir.path());
    assert_eq!(o["key"], complete.as_str());
    assert_eq!(o["size"], 20_000);
    assert_eq!(o["listed"], 3);
    assert_eq!(o["matched"], 1);
    let ignored: Vec<&str> = o["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        ignored.contains(&partial.as_str()) && ignored.contains(&checksum.as_str()),
        "{ignored:?}"
    );
    assert!(out.stderr.contains("ignored: "), "{}", out.stderr);
}

/// A mistyped profile is a credential problem, named as one with the profiles that
/// exist, before any request; not "cannot reach the S3 endpoint".
#[test]
fn a_mistyped_profile_is_reported_as_a_credential_problem() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let aws = dir.path().join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile production]\nregion = us-east-1\n[profile staging]\nregion = us-east-1\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[production]\naws_access_key_id = AKIAEXAMPLEEXAMPLE\naws_secret_access_key = not-used\n",
    )
    .unwrap();
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: b\n      key: k.pgdump\n      profile: prodution",
        "",
    );
    let mut cmd = drrun();
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    let out = run_cmd(
        cmd.current_dir(dir.path())
            .env("HOME", dir.path())
            .env("AWS_CONFIG_FILE", aws.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", aws.join("credentials"))
            // Never ask an instance metadata service: nothing leaves this machine.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg(&pb)
            .arg("--state-dir")
            .arg(dir.path().join("state")),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    for text in [
        "no AWS credentials from profile `prodution`",
        "profiles that exist: production, staging",
        "did you mean `production`?",
    ] {
        assert!(out.stderr.contains(text), "{text}: {}", out.stderr);
    }
    assert!(!out.stderr.contains("cannot reach"), "{}", out.stderr);
    let failed = journal(&dir.path().join("state"))
        .into_iter()
        .find(|r| r["type"] == "step_failed")
        .unwrap();
    assert_eq!(failed["class"], "config");
}

#[test]
fn a_checkpoint_whose_file_is_gone_is_fetched_again_on_resume() {
    let server = S3Server::start();
    let s3 = server.client();
    let rt = rt();
    bucket(&rt, &s3, "acme-hosting-services");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    put(
        &rt,
        &s3,
        "acme-hosting-services",
        &format!("acme/daily-acme-{}.pgdump", stamp(2)),
        body.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    // `after` fails until `go` exists, so the first run stops with `backup` checkpointed.
    let pb = fetch_playbook(
        dir.path(),
        &server,
        "bucket: acme-hosting-services\n      prefix: acme/daily-\n      select: newest-key-timestamp",
        "",
    );
    let mut text = std::fs::read_to_string(&pb).unwrap();
    text.push_str(
        "  after:\n    kind: exec\n    with:\n      argv: [sh, -c, 'test -f go && test -f \"$F\"']\n      env: { F: \"{{ steps.backup.outputs.path }}\" }\n",
    );
    std::fs::write(&pb, text).unwrap();
    let out = fetch(dir.path(), &pb);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let path = outputs(dir.path())["path"].as_str().unwrap().to_string();
    // The file goes (an emptyDir went with its pod); the checkpoint still says it is there.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(dir.path().join("go"), "").unwrap();
    let state = dir.path().join("state");
    let out = run_cmd(&mut drrun_s3(
        dir.path(),
        &["resume".as_ref(), "--state-dir".as_ref(), state.as_os_str()],
    ));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("checkpoint no longer holds") && out.stderr.contains(&path),
        "{}",
        out.stderr
    );
    let records = journal(&state);
    let started = records
        .iter()
        .filter(|r| r["type"] == "step_started" && r["step"] == "backup")
        .count();
    assert_eq!(started, 2, "fetched again, not reused");
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "step_reused" && r["step"] == "backup")
    );
    assert_eq!(std::fs::read(&path).unwrap(), body);
}
