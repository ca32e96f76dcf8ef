//! A real moto server (S3 and KMS wire protocols) on a free loopback port, from the
//! project's test virtualenv. Stopped when dropped. A missing server fails the test
//! with instructions; it never skips.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts moto with `configure` applied to its command first: extra environment,
    /// arguments, or somewhere for its request log (stderr; discarded by default).
    pub fn start_with(configure: impl FnOnce(&mut Command)) -> Self {
        let server = super::venv_tool("moto_server");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(server);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut command);
        let child = command.spawn().expect("start moto_server");
        let moto = Self { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An S3 client of this server, on sealpipe's own HTTP client, with the test
    /// credentials and path-style addressing.
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_s3::Config::builder()
            .http_client(sealpipe::aws::http_client())
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
