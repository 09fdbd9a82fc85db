//! CPU time of the processes that do the work: the three services and the servers they use. What
//! a request or an order costs is the CPU all of them spent on it, wherever it went.

use std::process::Command;

/// A process whose CPU time is counted, by the name it is reported under.
pub struct Counted {
    pub label: String,
    pub pid: u32,
}

/// The processes of one measurement.
pub struct Processes {
    pub processes: Vec<Counted>,
    ticks_per_second: f64,
}

impl Processes {
    /// `services` (label, pid) plus the servers listening on `ports` (label, port).
    pub fn new(services: &[(&str, Option<u32>)], servers: &[(&str, u16)]) -> Processes {
        let mut processes: Vec<Counted> = services
            .iter()
            .filter_map(|(label, pid)| pid.map(|pid| Counted { label: (*label).to_owned(), pid }))
            .collect();
        for (label, port) in servers {
            match listening_pid(*port) {
                Some(pid) => processes.push(Counted { label: (*label).to_owned(), pid }),
                None => eprintln!("no process found listening on :{port} ({label}); its CPU is not counted"),
            }
        }
        Processes { processes, ticks_per_second: ticks_per_second() }
    }

    /// CPU seconds (user + system) each process has used so far, in order.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        self.processes.iter().map(|process| self.cpu_of(process.pid)).collect()
    }

    fn cpu_of(&self, pid: u32) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
        // The command name (field 2) may hold spaces; the fields after it are plain numbers.
        let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0.0 };
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks =
            |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / self.ticks_per_second
    }

    /// What was spent between two readings, per unit of work: the total and each process, in µs.
    pub fn per_unit(&self, before: &[f64], after: &[f64], units: u64) -> (f64, Vec<(String, f64)>) {
        let units = units.max(1) as f64;
        let parts: Vec<(String, f64)> = self
            .processes
            .iter()
            .zip(before.iter().zip(after))
            .map(|(process, (before, after))| (process.label.clone(), (after - before) / units * 1e6))
            .collect();
        (parts.iter().map(|(_, micros)| micros).sum(), parts)
    }
}

/// The process listening on a TCP port of this machine (through `ss`).
fn listening_pid(port: u16) -> Option<u32> {
    let output = Command::new("ss").args(["-ltnpH", &format!("sport = :{port}")]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let start = text.find("pid=")? + "pid=".len();
    text[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(total, parts)` as `1034 µs (mariadbd 300, beam.smp 290, …)`.
pub fn describe(total: f64, parts: &[(String, f64)]) -> String {
    let parts: Vec<String> = parts.iter().map(|(label, micros)| format!("{label} {micros:.0}")).collect();
    format!("{total:.0} µs ({})", parts.join(", "))
}
