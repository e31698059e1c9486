//! The apalis queue of `ScoreChunk` tasks in Redis: the API pushes, workers pull.

use std::time::Duration;

use crate::ScoreChunk;

/// The queue's storage with the default heartbeat (5 s).
pub async fn queue(
    redis_url: &str,
    queue: &str,
) -> Result<apalis_redis::RedisStorage<ScoreChunk>, redis::RedisError> {
    queue_with(redis_url, queue, Duration::from_secs(5)).await
}

/// Like [`queue`], with the heartbeat that decides when a dead worker's chunks are re-enqueued
/// (after three missed beats).
pub async fn queue_with(
    redis_url: &str,
    queue: &str,
    heartbeat: Duration,
) -> Result<apalis_redis::RedisStorage<ScoreChunk>, redis::RedisError> {
    let conn = apalis_redis::connect(redis_url).await?;
    let config = apalis_redis::Config::default()
        .queue(queue)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(3);
    Ok(apalis_redis::RedisStorage::new(conn).with_config(config))
}
