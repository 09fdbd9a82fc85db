//! `parked list|replay [--limit N]`: the operator commands every consuming service offers for its
//! dead-letter queue.

use serde_json::{Value, json};

use platform::{Health, Shutdown};

use super::{RabbitError, RabbitMq, RabbitSettings};
use crate::MessagingMetrics;

const DEFAULT_LIMIT: usize = 100;

pub const USAGE: &str = "usage: parked list [--limit N]   show parked messages (they stay parked)\n       parked replay [--limit N] move parked messages back to the queue";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkedCommand {
    List { limit: usize },
    Replay { limit: usize },
}

impl ParkedCommand {
    /// Parses the process arguments after the program name: `None` when there are none (run the
    /// service), an error with the usage when they are not a parked command.
    pub fn parse(args: &[String]) -> Result<Option<ParkedCommand>, String> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let (action, rest) = match words.as_slice() {
            [] => return Ok(None),
            ["parked", action, rest @ ..] => (*action, rest),
            _ => return Err(USAGE.to_owned()),
        };
        let limit = match rest {
            [] => DEFAULT_LIMIT,
            ["--limit", n] => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("--limit must be a positive number\n{USAGE}"))?,
            _ => return Err(USAGE.to_owned()),
        };
        match action {
            "list" => Ok(Some(ParkedCommand::List { limit })),
            "replay" => Ok(Some(ParkedCommand::Replay { limit })),
            _ => Err(USAGE.to_owned()),
        }
    }

    /// What the process's arguments ask for: `None` to run the service. Bad arguments print the
    /// usage; the exit code to leave with is the error.
    pub fn from_process_args() -> Result<Option<ParkedCommand>, std::process::ExitCode> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Self::parse(&args).map_err(|usage| {
            eprintln!("{usage}");
            std::process::ExitCode::from(platform::config::EXIT_CONFIG)
        })
    }

    /// `<binary> parked …`: runs the command, prints its answer as JSON on stdout (no logs), or the
    /// error on stderr; the process's exit code.
    pub async fn main(self, service: &str, settings: RabbitSettings, queue: &str) -> std::process::ExitCode {
        match self.execute(settings, queue).await {
            Ok(answer) => {
                println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{service}: {error}");
                std::process::ExitCode::FAILURE
            }
        }
    }

    /// Runs the command on a connection of its own, closed afterwards.
    pub async fn execute(self, settings: RabbitSettings, queue: &str) -> Result<Value, String> {
        let shutdown = Shutdown::new();
        let status = Health::new(&mut Default::default()).add_status("rabbitmq", true);
        let rabbit =
            RabbitMq::new(settings, Vec::new(), status, MessagingMetrics::unregistered(), shutdown.clone())
                .map_err(|e| e.to_string())?;
        let result = self.run(&rabbit, queue).await.map_err(|e| e.to_string());
        shutdown.trigger();
        shutdown.wait_for_tasks(std::time::Duration::from_secs(5)).await;
        result
    }

    /// Runs the command against `queue`'s dead-letter queue; the answer is JSON for the terminal.
    pub async fn run(self, rabbit: &RabbitMq, queue: &str) -> Result<Value, RabbitError> {
        // The connection is made in the background; give it a moment.
        let deadline = tokio::time::Instant::now() + rabbit.settings().publish_timeout() * 2;
        while !rabbit.is_available() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (ready, parked) = rabbit.queue_depths(queue).await?;
        Ok(match self {
            ParkedCommand::List { limit } => {
                let messages = rabbit.list_parked(queue, limit).await?;
                json!({ "queue": queue, "ready": ready, "parked": parked, "messages": messages })
            }
            ParkedCommand::Replay { limit } => {
                let replayed = rabbit.replay_parked(queue, limit).await?;
                json!({ "queue": queue, "replayed": replayed, "still_parked": parked.saturating_sub(replayed as u32) })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<ParkedCommand>, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        ParkedCommand::parse(&args)
    }

    #[test]
    fn parses_the_commands() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("parked list"), Ok(Some(ParkedCommand::List { limit: DEFAULT_LIMIT })));
        assert_eq!(parse("parked replay --limit 5"), Ok(Some(ParkedCommand::Replay { limit: 5 })));
        assert!(parse("parked").is_err());
        assert!(parse("parked list --limit 0").is_err());
        assert!(parse("parked drop").is_err());
        assert!(parse("serve").is_err());
    }
}
