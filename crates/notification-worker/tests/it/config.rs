//! The binary refuses a bad configuration or command line at once, saying what is wrong.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_notification-worker"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run notification-worker")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_webhook_channel_without_a_url_is_refused_naming_the_key() {
    let output = run(&[], &[("NOTIFY_CHANNELS", "webhook"), ("WEBHOOK_SECRET", "s")]);
    assert_eq!(output.status.code(), Some(64));
    let message = stderr(&output);
    assert!(message.contains("notifications.webhook.url"), "{message}");
    assert!(message.contains("WEBHOOK_URL"), "{message}");
}

#[test]
fn the_webhook_channel_without_a_secret_is_refused_naming_the_key() {
    let output = run(&[], &[("NOTIFY_CHANNELS", "log,webhook"), ("WEBHOOK_URL", "http://127.0.0.1:9/hook")]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("WEBHOOK_SECRET"), "{}", stderr(&output));
}

#[test]
fn an_unknown_channel_is_refused_naming_the_variable() {
    let output = run(&[], &[("NOTIFY_CHANNELS", "log,sms")]);
    assert_eq!(output.status.code(), Some(64));
    let message = stderr(&output);
    assert!(message.contains("NOTIFY_CHANNELS") && message.contains("sms"), "{message}");
}

#[test]
fn a_bad_command_line_prints_the_usage() {
    for args in [&["parked"][..], &["parked", "purge"], &["parked", "list", "--limit", "x"], &["serve"]] {
        let output = run(args, &[]);
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        assert!(stderr(&output).contains("--help"), "{args:?}: {}", stderr(&output));
    }
    let help = run(&["parked", "--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["list", "show", "replay", "discard"] {
        assert!(help.contains(command), "{help}");
    }
}
