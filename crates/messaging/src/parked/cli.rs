//! `<binary> parked list|show|replay|discard`: the operator commands every binary offers for the
//! dead-letter queues it consumes from, the same over RabbitMQ and over the in-process bus.
//!
//! Answers are a table for people, or JSON with `--json` for scripts (stdout either way); prompts,
//! previews and progress go to stderr.

use std::{
    io::{BufRead, IsTerminal, Write},
    num::NonZeroUsize,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{Value, json};

use super::{DeadLetters, ParkedMessage, Selection, headers};

/// Messages `parked list` shows unless told otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// The longest reason a table shows; `parked show` has it whole.
const REASON_WIDTH: usize = 72;

#[derive(Debug, Parser)]
struct Arguments {
    #[command(subcommand)]
    command: Option<Top>,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// Inspect, replay or discard the messages parked in the dead-letter queue
    #[command(subcommand)]
    Parked(ParkedCommand),
}

/// An operator command on parked messages.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ParkedCommand {
    /// List parked messages, oldest first (they stay parked)
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        output: Output,
    },
    /// Show one parked message whole: reason, headers and payload
    Show {
        /// The message id (`MESSAGE ID` in `parked list`)
        message_id: String,
        #[command(flatten)]
        output: Output,
    },
    /// Send parked messages back to their queue for a fresh round of attempts
    ///
    /// Every parked message unless --id, --reason or --limit narrow it. A message leaves the
    /// dead-letter queue only once its copy is safely in the queue.
    Replay {
        #[command(flatten)]
        target: Target,
        /// Show what would be replayed, and replay nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Delete parked messages for good (asks first unless --yes)
    ///
    /// Every parked message unless --id, --reason or --limit narrow it. Without --yes it shows
    /// the selected messages, asks, and then deletes only those it showed.
    Discard {
        #[command(flatten)]
        target: Target,
        /// Show what would be discarded, and discard nothing
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        output: Output,
    },
}

/// Which parked messages a command acts on.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Target {
    /// Only the message with this id (repeat for several)
    #[arg(long = "id", value_name = "MESSAGE_ID")]
    pub ids: Vec<String>,
    /// Only messages whose reason contains this text
    #[arg(long)]
    pub reason: Option<String>,
    /// At most this many messages per queue, oldest first (`list`: 100 unless given)
    #[arg(long, value_name = "N")]
    pub limit: Option<NonZeroUsize>,
}

impl Target {
    fn selection(&self, default_limit: usize) -> Selection {
        Selection {
            ids: self.ids.clone(),
            reason: self.reason.clone(),
            limit: self.limit.map_or(default_limit, NonZeroUsize::get),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Output {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// What a parked command did, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Listed(Vec<Listing>),
    Shown { queue: String, message: ParkedMessage },
    Moved { action: Action, dry_run: bool, queues: Vec<Moved> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replay,
    Discard,
}

impl Action {
    fn done(self) -> &'static str {
        match self {
            Action::Replay => "replayed",
            Action::Discard => "discarded",
        }
    }
}

/// One queue's parked messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub queue: String,
    pub ready: u32,
    pub parked: u32,
    pub messages: Vec<ParkedMessage>,
}

/// What a replay or discard did to one queue (on a dry run: what it would do to which messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub queue: String,
    pub selected: usize,
    pub done: usize,
    pub still_parked: u32,
    /// The selected messages, on a dry run.
    pub messages: Vec<ParkedMessage>,
}

/// Why a parked command did nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Bus(Box<dyn std::error::Error + Send + Sync>),
    #[error("no parked message has the id {0:?}")]
    NotFound(String),
    #[error("nothing discarded: not confirmed")]
    NotConfirmed,
}

fn bus_error(error: impl std::error::Error + Send + Sync + 'static) -> CommandError {
    CommandError::Bus(Box::new(error))
}

/// Where a command asks and shows progress: the terminal, or a script in tests.
pub trait Console: Send + Sync {
    /// Shows `preview` and asks `question`; true only for an explicit yes.
    fn confirm(&self, preview: &str, question: &str) -> bool;
    /// `done` of `total` messages have moved so far in `queue`.
    fn progress(&self, queue: &str, done: usize, total: usize);
}

/// The process's terminal: prompts on stderr, answers from stdin, a progress line on stderr when
/// it is a terminal.
#[derive(Default)]
pub struct Terminal {
    progress_shown: AtomicBool,
}

impl Console for Terminal {
    fn confirm(&self, preview: &str, question: &str) -> bool {
        eprint!("{preview}\n{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    }

    fn progress(&self, queue: &str, done: usize, total: usize) {
        if std::io::stderr().is_terminal() {
            self.progress_shown.store(true, Ordering::Relaxed);
            eprint!("\r{queue}: {done}/{total} moved");
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.progress_shown.load(Ordering::Relaxed) {
            eprintln!();
        }
    }
}

/// A console with nobody at it, for programs that run commands: every question gets the same
/// answer, and the progress reports are kept.
pub struct Unattended {
    answer: bool,
    progress: std::sync::Mutex<Vec<(String, usize, usize)>>,
}

impl Unattended {
    pub fn answering(answer: bool) -> Unattended {
        Unattended { answer, progress: Default::default() }
    }

    /// The progress reports so far: queue, done, total.
    pub fn progress_reports(&self) -> Vec<(String, usize, usize)> {
        self.progress.lock().map(|reports| reports.clone()).unwrap_or_default()
    }
}

impl Console for Unattended {
    fn confirm(&self, _preview: &str, _question: &str) -> bool {
        self.answer
    }

    fn progress(&self, queue: &str, done: usize, total: usize) {
        if let Ok(mut reports) = self.progress.lock() {
            reports.push((queue.to_owned(), done, total));
        }
    }
}

impl ParkedCommand {
    /// What the process's arguments ask for: `None` to run the service. `--help` prints help (exit
    /// code 0), bad arguments print what is wrong (exit code 64); either way the exit code to leave
    /// with is the error.
    pub fn from_process_args(binary: &str, about: &str) -> Result<Option<ParkedCommand>, ExitCode> {
        Self::parse(binary, about, std::env::args().skip(1)).map_err(|error| {
            let _ = error.print();
            // Help asked for is a success; a command line not understood is a usage error, the
            // same exit code as a configuration the service cannot use.
            if error.exit_code() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(platform::config::EXIT_CONFIG)
            }
        })
    }

    /// Parses the arguments after the program name: `None` when there are none.
    pub fn parse(
        binary: &str,
        about: &str,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Option<ParkedCommand>, clap::Error> {
        let command =
            Arguments::command().name(binary.to_owned()).bin_name(binary.to_owned()).about(about.to_owned());
        let matches = command.try_get_matches_from(std::iter::once(binary.to_owned()).chain(args))?;
        let Arguments { command } = Arguments::from_arg_matches(&matches)?;
        Ok(command.map(|Top::Parked(command)| command))
    }

    fn output(&self) -> Output {
        match self {
            ParkedCommand::List { output, .. }
            | ParkedCommand::Show { output, .. }
            | ParkedCommand::Replay { output, .. }
            | ParkedCommand::Discard { output, .. } => *output,
        }
    }

    /// Runs the command against `queues` (a service's own queue; every queue of the system in the
    /// one-process binary), then prints the answer; the process's exit code.
    pub async fn main<D: DeadLetters>(&self, binary: &str, dead_letters: &D, queues: &[&str]) -> ExitCode {
        let terminal = Terminal::default();
        let result = self.run(dead_letters, queues, &terminal).await;
        drop(terminal);
        match result {
            Ok(report) if self.output().json => {
                println!("{}", serde_json::to_string_pretty(&report.to_json()).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(report) => {
                print!("{}", report.to_table());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{binary}: {error}");
                ExitCode::FAILURE
            }
        }
    }

    pub async fn run<D: DeadLetters>(
        &self,
        dead_letters: &D,
        queues: &[&str],
        console: &dyn Console,
    ) -> Result<Report, CommandError> {
        match self {
            ParkedCommand::List { target, .. } => {
                let selection = target.selection(DEFAULT_LIST_LIMIT);
                let mut listings = Vec::with_capacity(queues.len());
                for &queue in queues {
                    let (ready, parked) = dead_letters.queue_depths(queue).await.map_err(bus_error)?;
                    let messages = dead_letters.list_parked(queue, &selection).await.map_err(bus_error)?;
                    listings.push(Listing { queue: queue.to_owned(), ready, parked, messages });
                }
                Ok(Report::Listed(listings))
            }
            ParkedCommand::Show { message_id, .. } => {
                let selection = Selection { limit: 1, ..Selection::ids([message_id.clone()]) };
                for &queue in queues {
                    let found = dead_letters.list_parked(queue, &selection).await.map_err(bus_error)?;
                    if let Some(message) = found.into_iter().next() {
                        return Ok(Report::Shown { queue: queue.to_owned(), message });
                    }
                }
                Err(CommandError::NotFound(message_id.clone()))
            }
            ParkedCommand::Replay { target, dry_run, .. } => {
                let selection = target.selection(usize::MAX);
                if *dry_run {
                    return preview(Action::Replay, dead_letters, queues, &selection).await;
                }
                let mut moved = Vec::with_capacity(queues.len());
                for &queue in queues {
                    let progress = |done, total| console.progress(queue, done, total);
                    let done =
                        dead_letters.replay_parked(queue, &selection, &progress).await.map_err(bus_error)?;
                    moved.push(after(dead_letters, queue, done, done).await?);
                }
                Ok(Report::Moved { action: Action::Replay, dry_run: false, queues: moved })
            }
            ParkedCommand::Discard { target, dry_run, yes, .. } => {
                let selection = target.selection(usize::MAX);
                if *dry_run {
                    return preview(Action::Discard, dead_letters, queues, &selection).await;
                }
                if *yes {
                    let mut moved = Vec::with_capacity(queues.len());
                    for &queue in queues {
                        let done = dead_letters.discard_parked(queue, &selection).await.map_err(bus_error)?;
                        moved.push(after(dead_letters, queue, done, done).await?);
                    }
                    return Ok(Report::Moved { action: Action::Discard, dry_run: false, queues: moved });
                }
                discard_what_was_confirmed(dead_letters, queues, &selection, console).await
            }
        }
    }
}

/// What a replay or discard would select, changing nothing.
async fn preview<D: DeadLetters>(
    action: Action,
    dead_letters: &D,
    queues: &[&str],
    selection: &Selection,
) -> Result<Report, CommandError> {
    let mut previews = Vec::with_capacity(queues.len());
    for &queue in queues {
        let messages = dead_letters.list_parked(queue, selection).await.map_err(bus_error)?;
        let mut moved = after(dead_letters, queue, messages.len(), 0).await?;
        moved.messages = messages;
        previews.push(moved);
    }
    Ok(Report::Moved { action, dry_run: true, queues: previews })
}

/// Shows what the selection holds now and asks; on a yes, discards those messages (by id), none
/// parked since.
async fn discard_what_was_confirmed<D: DeadLetters>(
    dead_letters: &D,
    queues: &[&str],
    selection: &Selection,
    console: &dyn Console,
) -> Result<Report, CommandError> {
    let Report::Moved { queues: previews, .. } =
        preview(Action::Discard, dead_letters, queues, selection).await?
    else {
        unreachable!("a preview is a Moved report")
    };
    let selected: usize = previews.iter().map(|queue| queue.selected).sum();
    if selected > 0 {
        let table =
            Report::Moved { action: Action::Discard, dry_run: true, queues: previews.clone() }.to_table();
        if !console.confirm(&table, &format!("Discard these {selected} parked message(s) for good?")) {
            return Err(CommandError::NotConfirmed);
        }
    }
    let mut moved = Vec::with_capacity(previews.len());
    for preview in previews {
        let ids: Vec<String> =
            preview.messages.iter().filter_map(|message| message.message_id.clone()).collect();
        let done = if ids.is_empty() {
            0
        } else {
            let shown = Selection { limit: ids.len(), ..Selection::ids(ids) };
            dead_letters.discard_parked(&preview.queue, &shown).await.map_err(bus_error)?
        };
        moved.push(after(dead_letters, &preview.queue, preview.selected, done).await?);
    }
    Ok(Report::Moved { action: Action::Discard, dry_run: false, queues: moved })
}

async fn after<D: DeadLetters>(
    dead_letters: &D,
    queue: &str,
    selected: usize,
    done: usize,
) -> Result<Moved, CommandError> {
    let (_, still_parked) = dead_letters.queue_depths(queue).await.map_err(bus_error)?;
    Ok(Moved { queue: queue.to_owned(), selected, done, still_parked, messages: Vec::new() })
}

impl Report {
    /// The answer for scripts.
    pub fn to_json(&self) -> Value {
        match self {
            Report::Listed(listings) => json!({
                "queues": listings.iter().map(|listing| json!({
                    "queue": listing.queue,
                    "ready": listing.ready,
                    "parked": listing.parked,
                    "messages": listing.messages,
                })).collect::<Vec<_>>(),
            }),
            Report::Shown { queue, message } => json!({ "queue": queue, "message": message }),
            Report::Moved { action, dry_run, queues } => json!({
                "dry_run": dry_run,
                "queues": queues.iter().map(|moved| {
                    let mut answer = json!({
                        "queue": moved.queue,
                        "selected": moved.selected,
                        action.done(): moved.done,
                        "still_parked": moved.still_parked,
                    });
                    if *dry_run {
                        answer["messages"] = json!(moved.messages);
                    }
                    answer
                }).collect::<Vec<_>>(),
            }),
        }
    }

    /// The answer for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        match self {
            Report::Listed(listings) => {
                for listing in listings {
                    out += &format!(
                        "{}: {} parked, {} waiting for the consumer\n",
                        listing.queue, listing.parked, listing.ready
                    );
                    out += &message_table(&listing.messages);
                    if listing.messages.len() < listing.parked as usize {
                        out += &format!(
                            "({} of {} shown; --limit shows more)\n",
                            listing.messages.len(),
                            listing.parked
                        );
                    }
                }
            }
            Report::Shown { queue, message } => {
                let field = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
                out += &format!("queue:        {queue}\n");
                out += &format!("message id:   {}\n", field(&message.message_id));
                out += &format!("type:         {}\n", field(&message.event_type));
                out += &format!("routing key:  {}\n", message.routing_key);
                out += &format!("reason:       {}\n", field(&message.reason));
                out += "headers:\n";
                for (name, value) in &message.headers {
                    out += &format!("  {name}: {value}\n");
                }
                let payload = serde_json::from_str::<Value>(&message.payload)
                    .ok()
                    .and_then(|value| serde_json::to_string_pretty(&value).ok())
                    .unwrap_or_else(|| message.payload.clone());
                out += &format!("payload:\n{payload}\n");
            }
            Report::Moved { action, dry_run: true, queues } => {
                for moved in queues {
                    let verb = match action {
                        Action::Replay => "replay",
                        Action::Discard => "discard",
                    };
                    out += &format!(
                        "{}: would {verb} {} of {} parked\n",
                        moved.queue, moved.selected, moved.still_parked
                    );
                    out += &message_table(&moved.messages);
                }
            }
            Report::Moved { action, dry_run: false, queues } => {
                for moved in queues {
                    out += &format!(
                        "{}: {} {} of {} selected, {} still parked\n",
                        moved.queue,
                        action.done(),
                        moved.done,
                        moved.selected,
                        moved.still_parked
                    );
                }
            }
        }
        out
    }
}

/// One line per message: id, type, when and why it was parked.
fn message_table(messages: &[ParkedMessage]) -> String {
    if messages.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 4]> = messages
        .iter()
        .map(|message| {
            let reason = message.reason.as_deref().unwrap_or("-").replace(['\n', '\r'], " ");
            let reason = match reason.char_indices().nth(REASON_WIDTH) {
                Some((cut, _)) => format!("{}…", &reason[..cut]),
                None => reason,
            };
            [
                message.message_id.clone().unwrap_or_else(|| "-".into()),
                message.event_type.clone().unwrap_or_else(|| "-".into()),
                message.headers.get(headers::FAILED_AT).cloned().unwrap_or_else(|| "-".into()),
                reason,
            ]
        })
        .collect();
    let titles = ["MESSAGE ID", "TYPE", "PARKED AT", "REASON"];
    let widths: Vec<usize> = (0..3)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([titles[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let mut table = line(titles);
    for row in &rows {
        table += &line([&row[0], &row[1], &row[2], &row[3]]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<ParkedCommand>, clap::error::ErrorKind> {
        ParkedCommand::parse("analytics-service", "test", line.split_whitespace().map(str::to_owned))
            .map_err(|error| error.kind())
    }

    fn target(ids: &[&str], reason: Option<&str>, limit: Option<usize>) -> Target {
        Target {
            ids: ids.iter().map(|&id| id.to_owned()).collect(),
            reason: reason.map(str::to_owned),
            limit: limit.and_then(NonZeroUsize::new),
        }
    }

    #[test]
    fn parses_the_commands() {
        let table = Output { json: false };
        assert_eq!(parse(""), Ok(None));
        assert_eq!(
            parse("parked list"),
            Ok(Some(ParkedCommand::List { target: target(&[], None, None), output: table }))
        );
        assert_eq!(
            parse("parked list --limit 5 --reason 410 --json"),
            Ok(Some(ParkedCommand::List {
                target: target(&[], Some("410"), Some(5)),
                output: Output { json: true }
            }))
        );
        assert_eq!(
            parse("parked show abc"),
            Ok(Some(ParkedCommand::Show { message_id: "abc".into(), output: table }))
        );
        assert_eq!(
            parse("parked replay --id a --id b --dry-run"),
            Ok(Some(ParkedCommand::Replay {
                target: target(&["a", "b"], None, None),
                dry_run: true,
                output: table
            }))
        );
        assert_eq!(
            parse("parked discard --reason gone -y"),
            Ok(Some(ParkedCommand::Discard {
                target: target(&[], Some("gone"), None),
                dry_run: false,
                yes: true,
                output: table
            }))
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand_and_helps_everywhere() {
        assert_eq!(parse("parked"), Err(clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand));
        assert_eq!(parse("parked list --limit 0"), Err(clap::error::ErrorKind::ValueValidation));
        assert_eq!(parse("parked drop"), Err(clap::error::ErrorKind::InvalidSubcommand));
        assert_eq!(parse("parked show"), Err(clap::error::ErrorKind::MissingRequiredArgument));
        assert_eq!(parse("serve"), Err(clap::error::ErrorKind::InvalidSubcommand));
        for help in [
            "--help",
            "parked --help",
            "parked list --help",
            "parked show --help",
            "parked replay --help",
            "parked discard --help",
        ] {
            assert_eq!(parse(help), Err(clap::error::ErrorKind::DisplayHelp), "{help}");
        }
    }

    fn message(id: &str, reason: &str) -> ParkedMessage {
        ParkedMessage {
            message_id: Some(id.into()),
            event_type: Some("OrderCreated".into()),
            routing_key: "order.created".into(),
            reason: Some(reason.into()),
            headers: [(headers::FAILED_AT.to_owned(), "2026-11-30T10:00:00Z".to_owned())].into(),
            payload: r#"{"a":1}"#.into(),
        }
    }

    #[test]
    fn tables_line_up_and_cut_long_reasons() {
        let long = "x".repeat(REASON_WIDTH + 10);
        let listed = Report::Listed(vec![Listing {
            queue: "analytics".into(),
            ready: 0,
            parked: 3,
            messages: vec![message("first", "short"), message("second-longer-id", &long)],
        }]);
        let table = listed.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "analytics: 3 parked, 0 waiting for the consumer");
        let type_column = lines[1].find("TYPE").unwrap();
        assert_eq!(lines[2].find("OrderCreated"), Some(type_column));
        assert_eq!(lines[3].find("OrderCreated"), Some(type_column));
        assert!(lines[3].ends_with(&format!("{}…", "x".repeat(REASON_WIDTH))));
        assert_eq!(lines[4], "(2 of 3 shown; --limit shows more)");
    }

    #[test]
    fn json_names_what_was_done() {
        let moved = Moved { queue: "q".into(), selected: 2, done: 2, still_parked: 1, messages: Vec::new() };
        let replayed = Report::Moved { action: Action::Replay, dry_run: false, queues: vec![moved.clone()] };
        assert_eq!(
            replayed.to_json(),
            json!({"dry_run": false, "queues": [{"queue": "q", "selected": 2, "replayed": 2, "still_parked": 1}]})
        );
        let discarded = Report::Moved { action: Action::Discard, dry_run: false, queues: vec![moved] };
        assert_eq!(discarded.to_json()["queues"][0]["discarded"], 2);
        let shown = Report::Shown { queue: "q".into(), message: message("a", "r") };
        assert!(shown.to_table().contains("payload:\n{\n  \"a\": 1\n}"));
    }
}
