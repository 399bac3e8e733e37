//! Incremental jobs (`job.incremental = true`): a submit after the inputs changed is a new generation instead
//! of a refusal. A generation is stored as a job of its own (key `<name>@<n>`) and writes its output to a
//! folder of its own (`gen-00003/` below `output.path`: the full snapshot, its manifest, and `changes.jsonl`,
//! what changed since the generation before). Before anything is sent, each record takes the answer an earlier
//! generation got for the same request (same model, API and body), so a night pays only for what changed.
//! When a generation is complete, `CURRENT` below `output.path` names its folder, and generations beyond
//! `job.keep` are pruned, state and output.
//!
//! Inside a generation, a run stops and resumes as any run does: the generation is chosen again by the inputs'
//! fingerprint, so a resumed run finds the one it was working on.

use super::ingest::Unchanged;
use crate::checkpoint::{Generation, Store};
use crate::error::Error;
use crate::job::{Job, Location};
use crate::s3::S3;
use crate::sink::{LocalSink, S3Sink, Sink};

/// The generation a submit works on.
#[derive(Debug, Clone)]
pub struct Current {
    /// 1, 2, …
    pub number: u64,
    /// The key its records are stored under.
    pub key: String,
    /// The key of the last finished generation before it: what its change set is against.
    pub previous: Option<String>,
    /// The keys of every other generation still stored, whose answers it may reuse.
    pub reuse_from: Vec<String>,
}

/// The output folder of generation `number`.
pub fn folder(number: u64) -> String {
    format!("gen-{number:05}")
}

/// The generation for inputs and settings with fingerprint `hash`: the latest one if it was started with the
/// same, else a new one (which starts from the rates the latest one learned).
pub async fn choose(store: &Store, job: &Job, hash: &str) -> Result<Current, Error> {
    let generations = store.generations(&job.name).await?;
    let current = match generations.last() {
        Some(g) if g.fingerprint == hash => g.clone(),
        last => {
            let number = last.map_or(1, |g| g.number + 1);
            let key = format!("{}@{number}", job.name);
            store
                .start_generation(&job.name, number, &key, hash)
                .await?;
            if let Some(l) = last {
                crate::say!(
                    "job `{}`: the inputs changed since generation {}; starting generation {number}",
                    job.name,
                    l.number
                );
            }
            Generation {
                number,
                key,
                fingerprint: hash.to_string(),
                started_at: 0,
                finished_at: None,
            }
        }
    };
    let previous = generations
        .iter()
        .filter(|g| g.number < current.number && g.finished_at.is_some())
        .map(|g| g.key.clone())
        .next_back();
    let reuse_from = generations
        .iter()
        .filter(|g| g.number != current.number)
        .map(|g| g.key.clone())
        .collect();
    Ok(Current {
        number: current.number,
        key: current.key,
        previous,
        reuse_from,
    })
}

/// What generation `current`'s ingest may take instead of reading: the input files' records of the latest
/// earlier generation that read its inputs with the same `settings` (a change of template, chunking or model
/// changes what a file gives, so then every file is read).
pub async fn unchanged(
    store: &Store,
    current: &Current,
    settings: &str,
) -> Result<Unchanged, Error> {
    for key in current.reuse_from.iter().rev() {
        let Some(stored) = store.job(key).await? else {
            continue;
        };
        if stored.ingested && stored.settings == settings {
            let number = key
                .rsplit_once('@')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or_default();
            return Ok(Unchanged {
                spans: store.clean_input_spans(key).await?,
                from: Some((key.clone(), number)),
            });
        }
    }
    Ok(Unchanged::default())
}

/// `job` as generation `current` runs it: its records under the generation's key, its output in the
/// generation's folder.
pub fn job_for(job: &Job, current: &Current) -> Job {
    let mut g = job.clone();
    g.name = current.key.clone();
    g.output.location = below(&job.output.location, &folder(current.number));
    g
}

/// The folder or prefix `name` below `location`.
fn below(location: &Location, name: &str) -> Location {
    match location {
        Location::Local(dir) => Location::Local(dir.join(name)),
        Location::S3(uri) => Location::S3(uri.with_key(uri.child(&format!("{name}/")))),
    }
}

/// The sink for `location`.
pub async fn open_sink(location: &Location, s3: Option<&S3>) -> Result<Sink, Error> {
    Ok(match location {
        Location::Local(dir) => Sink::Local(LocalSink::open(dir)?),
        Location::S3(prefix) => {
            Sink::S3(S3Sink::open(s3.cloned().expect("a client for S3 output"), prefix).await?)
        }
    })
}

/// After generation `current` of `job` finished: notes it, points `CURRENT` at its folder, and prunes the
/// generations beyond `keep` (their output first, then their state, so a prune cut short is finished by the
/// next run).
pub async fn conclude(
    store: &Store,
    job: &Job,
    current: &Current,
    keep: u32,
    s3: Option<&S3>,
) -> Result<(), Error> {
    store.finish_generation(&job.name, current.number).await?;
    let pointer = format!("{}\n", folder(current.number));
    match open_sink(&job.output.location, s3).await? {
        Sink::Local(local) => local.publish("CURRENT", pointer.as_bytes())?,
        Sink::S3(s3) => s3.put("CURRENT", pointer.into_bytes()).await?,
    }
    let generations = store.generations(&job.name).await?;
    let kept: Vec<u64> = generations
        .iter()
        .rev()
        .filter(|g| g.finished_at.is_some())
        .take(keep as usize)
        .map(|g| g.number)
        .collect();
    for g in generations
        .iter()
        .filter(|g| g.number != current.number && !kept.contains(&g.number))
    {
        let location = below(&job.output.location, &folder(g.number));
        match open_sink(&location, s3).await? {
            Sink::Local(local) => {
                local.clear()?;
                // Only an empty folder goes: anything else put there is left alone.
                let _ = std::fs::remove_dir(local.dir());
            }
            Sink::S3(s3) => s3.clear().await?,
        }
        store.forget_generation(&job.name, g).await?;
        crate::say!("job `{}`: pruned generation {}", job.name, g.number);
    }
    Ok(())
}
