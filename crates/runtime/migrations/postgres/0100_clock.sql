CREATE TABLE platform_clock (
    id     BIGINT PRIMARY KEY,
    now_ms BIGINT NOT NULL
);
