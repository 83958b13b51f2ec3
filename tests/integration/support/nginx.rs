//! The shipped nginx site (`deploy/nginx/wa-supervisor.conf`) in front of a test app: the same
//! file with only its placeholders replaced (a self-signed certificate, a private prefix for logs
//! and temp files, free loopback ports, the app as upstream). Needs Debian's nginx and openssl,
//! which the test command installs (`scripts/check-deploy.sh`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SITE: &str = include_str!("../../../deploy/nginx/wa-supervisor.conf");
pub const HOST: &str = "wa.example.com";

pub struct Nginx {
    child: Child,
    pub https_port: u16,
    _prefix: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// Starts nginx with the shipped site proxying to `127.0.0.1:upstream`; waits until it serves.
    pub fn start(upstream: u16) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        let px = prefix.path().to_path_buf();
        for dir in ["cert", "logs", "www", "tmp"] {
            std::fs::create_dir_all(px.join(dir)).unwrap();
        }
        let cert = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={HOST}")])
            .arg("-keyout")
            .arg(px.join("cert/privkey.pem"))
            .arg("-out")
            .arg(px.join("cert/fullchain.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (scripts/check-deploy.sh installs it)");
        assert!(cert.success());
        let (http, https) = (free_port(), free_port());
        let p = px.display();
        let site = SITE
            .replace(
                &format!("/etc/letsencrypt/live/{HOST}/"),
                &format!("{p}/cert/"),
            )
            .replace("/var/log/nginx/", &format!("{p}/logs/"))
            .replace("/var/www/html", &format!("{p}/www"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
            .replace("listen [::]:80;", "")
            .replace("listen 443 ssl", &format!("listen 127.0.0.1:{https} ssl"))
            .replace("listen [::]:443 ssl http2;", "")
            .replace(
                "server 127.0.0.1:8080;",
                &format!("server 127.0.0.1:{upstream};"),
            );
        assert!(
            site.contains(&format!("127.0.0.1:{upstream}")),
            "upstream replaced"
        );
        std::fs::write(px.join("site.conf"), site).unwrap();
        std::fs::write(
            px.join("nginx.conf"),
            format!(
                "pid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nmaster_process off;\n\
                 events {{ worker_connections 64; }}\nhttp {{\n  include /etc/nginx/mime.types;\n\
                 access_log {p}/logs/access.log;\n  client_body_temp_path {p}/tmp/body;\n\
                 proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n\
                 uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n\
                 include {p}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&px)
            .arg("-e")
            .arg(px.join("logs/error.log"))
            .arg("-c")
            .arg(px.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/check-deploy.sh installs it)");
        let nginx = Nginx {
            child,
            https_port: https,
            _prefix: prefix,
        };
        nginx.wait_listening(&px);
        nginx
    }

    fn wait_listening(&self, px: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.https_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(px.join("logs/error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The site's base URL (resolve `HOST` to 127.0.0.1 in the client).
    pub fn base(&self) -> String {
        format!("https://{HOST}:{}", self.https_port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
