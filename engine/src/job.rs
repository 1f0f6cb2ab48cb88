//! Jobs: a named build function, and the registry the `runnel` binary lists and runs.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::flow::Flow;

type BuildFn = dyn for<'a, 's> Fn(&'a mut Flow<'s>) -> Result<()> + Send + Sync;

/// A job: a name, a one-line description, and the function that builds its graph.
///
/// The build function runs once on every worker (so closures inside it need not be `Send`);
/// it must build the same graph on every worker for the same configuration.
#[derive(Clone)]
pub struct Job {
    name: String,
    about: String,
    build: Arc<BuildFn>,
    no_checkpoints: Option<String>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).finish()
    }
}

impl Job {
    /// A job named `name` (what `runnel run NAME` takes), described by `about`.
    pub fn new<F>(name: &str, about: &str, build: F) -> Self
    where
        F: for<'a, 's> Fn(&'a mut Flow<'s>) -> Result<()> + Send + Sync + 'static,
    {
        Job {
            name: name.to_string(),
            about: about.to_string(),
            build: Arc::new(build),
            no_checkpoints: None,
        }
    }
    /// Marks the job as one that cannot take checkpoints, saying why (for example, it keeps
    /// updating tables, see [`crate::table`]): the CLI runs it with checkpoints off unless told
    /// otherwise, and refuses, with `reason`, when asked for them.
    pub fn without_checkpoints(mut self, reason: &str) -> Self {
        self.no_checkpoints = Some(reason.to_string());
        self
    }
    /// Why the job cannot take checkpoints, if it cannot.
    pub fn checkpoints_unsupported(&self) -> Option<&str> {
        self.no_checkpoints.as_deref()
    }
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The job's one-line description.
    pub fn about(&self) -> &str {
        &self.about
    }
    /// Builds the job's graph into `flow` and checks it.
    pub fn build_into(&self, flow: &mut Flow<'_>) -> Result<()> {
        (self.build)(flow)?;
        flow.finish()
    }
}

/// The jobs a binary knows, by name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    jobs: Vec<Job>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a job (builder style).
    pub fn with(mut self, job: Job) -> Self {
        self.jobs.push(job);
        self
    }
    /// Every job, in the order they were added.
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }
    /// The job named `name`, or an error that lists the known ones.
    pub fn get(&self, name: &str) -> Result<&Job> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            Error::InvalidJob {
                job: name.to_string(),
                reason: format!("no such job; known jobs: {}", names.join(", ")),
            }
        })
    }
}
