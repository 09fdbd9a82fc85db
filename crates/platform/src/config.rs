//! Configuration: defaults < optional TOML file < `.env` file < environment.
//!
//! Two environment forms are read:
//! - the flat names of the system we replace and a few more (`DB_HOST`, `SERVICE_PORT`, …), see [`FLAT_ENV`];
//! - `ORDERFLOW_<SECTION>__<KEY>` for every setting, e.g. `ORDERFLOW_HTTP__REQUEST_TIMEOUT_MS=5000`.
//!   These win over the flat names.
//!
//! Values from the environment are taken verbatim as strings (a password `007` stays `007`) and
//! converted only where the setting is a number or a boolean. A TOML file is read when
//! `ORDERFLOW_CONFIG` names one. A `.env` file in the working directory supplies variables the
//! environment does not set, as docker compose does.

use std::collections::BTreeMap;

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use serde::{Serialize, de::DeserializeOwned};

/// Environment variable naming an optional TOML configuration file.
pub const CONFIG_FILE_ENV: &str = "ORDERFLOW_CONFIG";
/// Exit code of a process refused for its configuration or command line (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Prefix of the nested environment form.
pub const ENV_PREFIX: &str = "ORDERFLOW_";

/// Flat environment variables and the setting each one sets.
pub const FLAT_ENV: &[(&str, &str)] = &[
    ("SERVICE_PORT", "http.port"),
    ("DATABASE_URL", "database.url"),
    ("DB_HOST", "database.host"),
    ("DB_PORT", "database.port"),
    ("DB_USER", "database.user"),
    ("DB_PASSWORD", "database.password"),
    ("DB_NAME", "database.name"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_HOST", "redis.host"),
    ("REDIS_PORT", "redis.port"),
    ("REDIS_PASSWORD", "redis.password"),
    ("RABBITMQ_URL", "rabbitmq.url"),
    ("RABBITMQ_HOST", "rabbitmq.host"),
    ("RABBITMQ_PORT", "rabbitmq.port"),
    ("RABBITMQ_USER", "rabbitmq.user"),
    ("RABBITMQ_PASSWORD", "rabbitmq.password"),
    ("RABBITMQ_VHOST", "rabbitmq.vhost"),
    ("RABBITMQ_ADDRESSES", "rabbitmq.addresses"),
    ("LOG_LEVEL", "telemetry.log_level"),
    ("LOG_FORMAT", "telemetry.log_format"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    ("ENVIRONMENT", "telemetry.environment"),
    ("SHUTDOWN_GRACE_PERIOD_SECONDS", "shutdown.grace_period_seconds"),
    ("API_KEYS", "auth.api_keys"),
    ("RATE_LIMIT_PER_SECOND", "rate_limit.requests_per_second"),
    ("RATE_LIMIT_BURST", "rate_limit.burst"),
    ("RATE_LIMIT_TRUSTED_PROXIES", "rate_limit.trusted_proxies"),
];

/// A configuration that cannot be used. Its message is one line that names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn invalid(key: &str, reason: impl std::fmt::Display) -> Self {
        ConfigError(format!("{key}: {reason}"))
    }
}

/// Checks a table of settings that must be greater than 0; the error names the first that is not.
pub fn require_positive(settings: &[(&str, u64)]) -> Result<(), ConfigError> {
    match settings.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(ConfigError::invalid(key, "must be greater than 0")),
        None => Ok(()),
    }
}

/// Read from the working directory, when present: `NAME=value` lines for variables the process
/// environment does not set.
pub const DOTENV_FILE: &str = ".env";

/// Loads settings from the process environment, the `.env` file and the TOML file they may name.
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: &T,
    extra_flat_env: &[(&str, &str)],
) -> Result<T, ConfigError> {
    load_from(defaults, extra_flat_env, environment()?)
}

/// The process environment over the variables of the `.env` file in the working directory.
pub fn environment() -> Result<BTreeMap<String, String>, ConfigError> {
    environment_with(std::path::Path::new(DOTENV_FILE), std::env::vars())
}

/// `env` over the variables of the `dotenv` file: the testable core of [`environment`].
pub fn environment_with(
    dotenv: &std::path::Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut variables = read_dotenv(dotenv)?;
    variables.extend(env);
    Ok(variables)
}

/// The variables of a `.env` file (none when there is no such file). Values in single quotes are
/// literal; elsewhere `${NAME}` is replaced, as in docker compose.
fn read_dotenv(path: &std::path::Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let invalid = |error: dotenvy::Error| ConfigError::invalid(&path.display().to_string(), error);
    match dotenvy::from_path_iter(path) {
        Ok(lines) => lines.map(|line| line.map_err(invalid)).collect(),
        Err(error) if error.not_found() => Ok(BTreeMap::new()),
        Err(error) => Err(invalid(error)),
    }
}

/// Loads settings from the given environment: the testable core of [`load`].
pub fn load_from<T: Serialize + DeserializeOwned>(
    defaults: &T,
    extra_flat_env: &[(&str, &str)],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let env: BTreeMap<String, String> = env.into_iter().collect();
    let flat_table: Vec<(String, String)> = FLAT_ENV
        .iter()
        .chain(extra_flat_env)
        .map(|(name, key)| ((*name).to_owned(), (*key).to_owned()))
        .collect();

    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = env.get(CONFIG_FILE_ENV).filter(|p| !p.is_empty()) {
        if !std::path::Path::new(path).is_file() {
            return Err(ConfigError::invalid(CONFIG_FILE_ENV, format!("file {path:?} does not exist")));
        }
        figment = figment.merge(Toml::file(path));
    }

    let flat = flat_table
        .iter()
        .filter_map(|(name, key)| env.get(name).map(|value| (key.clone(), name.clone(), value.clone())))
        .collect();
    let nested = env
        .iter()
        .filter(|(name, _)| name.as_str() != CONFIG_FILE_ENV)
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            let key = rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join(".");
            Some((key, name.clone(), value.clone()))
        })
        .collect();
    figment = figment.merge(EnvStrings { vars: flat }).merge(EnvStrings { vars: nested });

    // Lossy: a string from the environment becomes a number or a boolean only where the
    // setting is one; strings stay verbatim.
    figment.extract_lossy().map_err(|errors| {
        let messages: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
        ConfigError(messages.join("; "))
    })
}

/// Environment variables as verbatim strings, each set at its setting's key.
struct EnvStrings {
    /// (setting key, variable name, value)
    vars: Vec<(String, String, String)>,
}

impl Provider for EnvStrings {
    fn metadata(&self) -> Metadata {
        let names: BTreeMap<String, String> =
            self.vars.iter().map(|(key, name, _)| (key.clone(), name.clone())).collect();
        Metadata::named("environment").interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            names.get(&key).cloned().unwrap_or(key)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, _, value) in &self.vars {
            let nested = figment::util::nest(key, Value::from(value.clone()));
            if let Value::Dict(_, entries) = nested {
                merge_into(&mut dict, entries);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_into(target: &mut Dict, source: Dict) {
    for (key, value) in source {
        match (target.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => merge_into(existing, incoming),
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}
