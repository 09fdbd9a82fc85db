-- Events waiting to be published, written in the same transaction as the change they describe.
CREATE TABLE outbox (
    id            BIGINT        NOT NULL AUTO_INCREMENT,
    event_id      BINARY(16)    NOT NULL,
    event_type    VARCHAR(64)   NOT NULL,
    routing_key   VARCHAR(255)  NOT NULL,
    payload       MEDIUMBLOB    NOT NULL,
    headers       TEXT          NOT NULL,
    created_at    DATETIME(6)   NOT NULL,
    -- Next time the row may be claimed: now for new rows, lease end while being published,
    -- backoff end after a failed publish.
    available_at  DATETIME(6)   NOT NULL,
    attempts      INT           NOT NULL DEFAULT 0,
    last_error    VARCHAR(1024) NULL,
    published_at  DATETIME(6)   NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ux_outbox_event (event_id),
    KEY ix_outbox_due (published_at, available_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
