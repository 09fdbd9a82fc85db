//! `<service> parked …` against the broker: the operator commands of [`crate::parked::cli`] on a
//! connection of their own, closed afterwards.

use std::process::ExitCode;

use platform::{Health, Shutdown};

use super::{RabbitMq, RabbitSettings};
use crate::{
    MessagingMetrics,
    parked::cli::{CommandError, Console, ParkedCommand, Report},
};

/// Runs `command` on `queue`'s dead-letter queue and prints the answer; the exit code.
pub async fn main(command: &ParkedCommand, service: &str, settings: RabbitSettings, queue: &str) -> ExitCode {
    match connect(settings).await {
        Ok((rabbit, shutdown)) => {
            let code = command.main(service, &rabbit, &[queue]).await;
            close(shutdown).await;
            code
        }
        Err(error) => {
            eprintln!("{service}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command` on `queue`'s dead-letter queue; the answer, unprinted.
pub async fn execute(
    command: &ParkedCommand,
    settings: RabbitSettings,
    queue: &str,
    console: &dyn Console,
) -> Result<Report, CommandError> {
    let (rabbit, shutdown) = connect(settings).await?;
    let result = command.run(&rabbit, &[queue], console).await;
    close(shutdown).await;
    result
}

/// A connection for one command, made in the background: waits a moment for it.
async fn connect(settings: RabbitSettings) -> Result<(RabbitMq, Shutdown), CommandError> {
    let shutdown = Shutdown::new();
    let status = Health::new(&mut Default::default()).add_status("rabbitmq", true);
    let rabbit =
        RabbitMq::new(settings, Vec::new(), status, MessagingMetrics::unregistered(), shutdown.clone())
            .map_err(|error| CommandError::Bus(Box::new(error)))?;
    let deadline = tokio::time::Instant::now() + rabbit.settings().publish_timeout() * 2;
    while !rabbit.is_available() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok((rabbit, shutdown))
}

async fn close(shutdown: Shutdown) {
    shutdown.trigger();
    shutdown.wait_for_tasks(std::time::Duration::from_secs(5)).await;
}
