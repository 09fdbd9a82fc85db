//! Configuration: the reference's variable names, precedence, verbatim secrets, clear errors.

use std::io::Write;

use platform::{
    HttpSettings, TelemetrySettings,
    config::{ConfigError, environment_with, load_from},
    database::DatabaseSettings,
    redis::RedisSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    http: HttpSettings,
    database: DatabaseSettings,
    redis: RedisSettings,
    telemetry: TelemetrySettings,
    feature: Feature,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
struct Feature {
    enabled: bool,
    name: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::with_port(8080),
            database: DatabaseSettings::named("order_db", "root"),
            redis: RedisSettings::default(),
            telemetry: TelemetrySettings::default(),
            feature: Feature::default(),
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    load_from(&Settings::default(), &[("FEATURE_NAME", "feature.name")], env(pairs))
}

#[test]
fn defaults_apply_without_any_environment() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.http.port, 8080);
    assert_eq!(settings.database.name, "order_db");
    assert_eq!(settings.database.port, 3306);
    assert_eq!(settings.redis.port, 6379);
    assert_eq!(settings.telemetry.log_level, "info,lapin=off");
}

#[test]
fn reads_the_reference_variables() {
    let settings = load(&[
        ("DB_HOST", "order-db"),
        ("DB_PORT", "3307"),
        ("DB_USER", "orderuser"),
        ("DB_PASSWORD", "orderpass"),
        ("DB_NAME", "order_db"),
        ("REDIS_HOST", "cache"),
        ("REDIS_PORT", "6380"),
        ("SERVICE_PORT", "9090"),
        ("LOG_LEVEL", "debug"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("FEATURE_NAME", "extra"),
    ])
    .unwrap();
    assert_eq!(settings.database.host, "order-db");
    assert_eq!(settings.database.port, 3307);
    assert_eq!(settings.database.user, "orderuser");
    assert_eq!(settings.database.password.expose(), "orderpass");
    assert_eq!(settings.redis.host, "cache");
    assert_eq!(settings.redis.port, 6380);
    assert_eq!(settings.http.port, 9090);
    assert_eq!(settings.telemetry.log_level, "debug");
    assert_eq!(settings.telemetry.otlp_endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(settings.feature.name, "extra", "services add their own flat names");
    let options = settings.database.connect_options().unwrap();
    assert_eq!(options.get_host(), "order-db");
    assert_eq!(options.get_database(), Some("order_db"));
}

#[test]
fn secrets_and_strings_are_taken_verbatim() {
    for password in ["007", "true", "[abc]", "12.50", "p@ss w0rd#", "{x}", " spaced "] {
        let settings =
            load(&[("DB_PASSWORD", password), ("REDIS_PASSWORD", password), ("FEATURE_NAME", password)])
                .unwrap();
        assert_eq!(settings.database.password.expose(), password);
        assert_eq!(settings.redis.password.as_ref().map(|p| p.expose()), Some(password));
        assert_eq!(settings.feature.name, password);
    }
}

#[test]
fn url_forms_are_accepted() {
    let settings = load(&[
        ("DATABASE_URL", "mysql://app:s%40cret@db.internal:3310/orders"),
        ("DB_HOST", "ignored-when-url-is-set"),
        ("REDIS_URL", "redis://:pw@cache.internal:6390/2"),
    ])
    .unwrap();
    let options = settings.database.connect_options().unwrap();
    assert_eq!(options.get_host(), "db.internal");
    assert_eq!(options.get_port(), 3310);
    assert_eq!(options.get_username(), "app");
    assert_eq!(options.get_database(), Some("orders"));
    assert_eq!(settings.redis.url.as_deref(), Some("redis://:pw@cache.internal:6390/2"));
    settings.redis.pool().expect("a valid redis URL builds a pool");
}

#[test]
fn nested_variables_set_every_key_and_win_over_flat_ones() {
    let settings = load(&[
        ("SERVICE_PORT", "9090"),
        ("ORDERFLOW_HTTP__PORT", "9191"),
        ("ORDERFLOW_HTTP__REQUEST_TIMEOUT_MS", "2500"),
        ("ORDERFLOW_FEATURE__ENABLED", "true"),
        ("ORDERFLOW_DATABASE__MAX_CONNECTIONS", "7"),
    ])
    .unwrap();
    assert_eq!(settings.http.port, 9191);
    assert_eq!(settings.http.request_timeout_ms, 2500);
    assert!(settings.feature.enabled);
    assert_eq!(settings.database.max_connections, 7);
}

#[test]
fn a_toml_file_sits_between_defaults_and_environment() {
    let mut file = tempfile();
    writeln!(file.1, "[http]\nport = 7000\nrequest_timeout_ms = 1234\n[database]\nname = \"from_file\"")
        .unwrap();
    let path = file.0.to_str().unwrap().to_owned();
    let settings = load(&[("ORDERFLOW_CONFIG", &path), ("SERVICE_PORT", "7001")]).unwrap();
    assert_eq!(settings.http.port, 7001, "environment beats the file");
    assert_eq!(settings.http.request_timeout_ms, 1234, "the file beats defaults");
    assert_eq!(settings.database.name, "from_file");
    let _ = std::fs::remove_file(&file.0);

    let missing = load(&[("ORDERFLOW_CONFIG", "/nonexistent/orderflow.toml")]).unwrap_err().to_string();
    assert!(missing.contains("ORDERFLOW_CONFIG"), "{missing}");
}

#[test]
fn a_dotenv_file_supplies_what_the_environment_does_not_set() {
    let path = std::env::temp_dir().join(format!("orderflow-{}.env", std::process::id()));
    std::fs::write(
        &path,
        "# the reference's .env\nLOG_LEVEL=debug\nENVIRONMENT=development\nDB_PASSWORD='s3cr$t 007'\n\
         DB_NAME=from_dotenv\nSERVICE_PORT=7000\n",
    )
    .unwrap();
    let variables = environment_with(&path, env(&[("SERVICE_PORT", "7001")])).unwrap();
    let settings: Settings = load_from(&Settings::default(), &[], variables).unwrap();
    assert_eq!(settings.http.port, 7001, "the environment beats the file");
    assert_eq!(settings.telemetry.log_level, "debug");
    assert_eq!(settings.telemetry.environment.as_deref(), Some("development"));
    assert_eq!(settings.database.password.expose(), "s3cr$t 007", "single quotes keep the value literal");
    assert_eq!(settings.database.name, "from_dotenv");

    std::fs::write(&path, "GOOD=1\nthis line is not a variable\n").unwrap();
    let error = environment_with(&path, env(&[])).unwrap_err().to_string();
    assert!(error.contains(path.to_str().unwrap()), "names the file: {error}");
    assert!(!error.contains('\n'), "one line: {error}");
    let _ = std::fs::remove_file(&path);

    assert!(environment_with(&path, env(&[])).unwrap().is_empty(), "no file, nothing read");
}

#[test]
fn invalid_values_are_reported_with_their_variable_name() {
    let error = load(&[("DB_PORT", "not-a-port")]).unwrap_err().to_string();
    assert!(error.contains("DB_PORT"), "{error}");
    assert!(error.starts_with("invalid configuration:"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");

    let error = load(&[("SERVICE_PORT", "70000")]).unwrap_err().to_string();
    assert!(error.contains("SERVICE_PORT"), "{error}");

    let error = load(&[("ORDERFLOW_HTTP__REQUEST_TIMEOUT_MS", "soon")]).unwrap_err().to_string();
    assert!(error.contains("ORDERFLOW_HTTP__REQUEST_TIMEOUT_MS"), "{error}");

    let error = load(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
    assert!(error.contains("LOG_FORMAT"), "{error}");

    let settings = load(&[("DATABASE_URL", "postgres://x")]).unwrap();
    let error = settings.database.connect_options().unwrap_err().to_string();
    assert!(error.contains("database.url"), "{error}");
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("orderflow-config-{}.toml", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}
