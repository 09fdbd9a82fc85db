//! A Redis server of a test's own, for configurations the shared one must not be given (an
//! eviction policy, persistence, a restart).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `redis-server` on a free loopback port with the given extra arguments, its files in a
/// directory of its own; stopped and removed on drop.
pub struct PrivateRedis {
    pub port: u16,
    arguments: Vec<String>,
    directory: PathBuf,
    child: Child,
}

impl PrivateRedis {
    /// Starts it and waits until it answers.
    pub fn start(arguments: &[&str]) -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let directory = std::env::temp_dir().join(format!("{}-redis-{port}", crate::unique_name()));
        std::fs::create_dir_all(&directory).expect("redis directory");
        let arguments: Vec<String> = arguments.iter().map(|argument| (*argument).to_owned()).collect();
        let child = spawn(port, &directory, &arguments);
        let server = PrivateRedis { port, arguments, directory, child };
        server.wait_until_up();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it as an operator would (`SHUTDOWN`, which writes what it persists) and starts it
    /// again on the same port and files.
    pub fn restart(&mut self) {
        let _ = Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown"]).output();
        let _ = self.child.wait();
        self.child = spawn(self.port, &self.directory, &self.arguments);
        self.wait_until_up();
    }

    /// Runs `redis-cli` against it; its output.
    pub fn cli(&self, arguments: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(arguments)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["ping"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server on :{} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(port: u16, directory: &std::path::Path, arguments: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(directory)
        .args(arguments)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
