//! Verifying the logs of a fleet: each replica keeps its own chain (its records name it), and
//! an auditor who gathers them checks every chain on its own and that the chains are distinct
//! replicas. One chain cannot vouch for another's records, so a broken chain does not stop the
//! others from being reported.

use crate::verify::{VerifyError, VerifyOptions, VerifySummary, verify_with};
use ed25519_dalek::VerifyingKey;
use std::path::PathBuf;

/// One replica's log: its files in chain order (see [`crate::chain_files`]).
#[derive(Debug, Clone)]
pub struct Chain {
    /// How the report names the chain (the directory or file it was given as).
    pub label: String,
    pub files: Vec<PathBuf>,
}

/// What one chain's verification found.
#[derive(Debug)]
pub struct ChainReport {
    pub label: String,
    pub result: Result<VerifySummary, VerifyError>,
}

/// A problem between chains, each of which verified on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetProblem {
    /// Two chains name the same replica: the same log given twice, a copy, or two daemons
    /// configured with one `replica_id`.
    SharedReplica { replica: String, chains: Vec<String> },
    /// A chain's entries name more than one replica: the daemon was renamed mid-chain.
    MixedReplicas { chain: String, replicas: Vec<String> },
}

impl std::fmt::Display for FleetProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetProblem::SharedReplica { replica, chains } => {
                write!(f, "replica {replica:?} is named by more than one chain: {}", chains.join(", "))
            }
            FleetProblem::MixedReplicas { chain, replicas } => {
                write!(f, "chain {chain} names several replicas: {}", replicas.join(", "))
            }
        }
    }
}

/// Every chain's report, and what is wrong between them.
#[derive(Debug)]
pub struct FleetReport {
    pub chains: Vec<ChainReport>,
    pub problems: Vec<FleetProblem>,
}

impl FleetReport {
    /// Every chain verified and nothing is wrong between them.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.chains.iter().all(|c| c.result.is_ok())
    }
}

/// Verifies each chain on its own with `key` (a fleet shares the signing key it is given as
/// a Secret), then checks that each names one replica and no replica has two chains.
pub fn verify_fleet(chains: &[Chain], key: &VerifyingKey, options: &VerifyOptions) -> FleetReport {
    let reports: Vec<ChainReport> = chains
        .iter()
        .map(|chain| ChainReport { label: chain.label.clone(), result: verify_with(&chain.files, key, options) })
        .collect();
    let mut problems = Vec::new();
    let mut owners: Vec<(String, Vec<String>)> = Vec::new();
    for report in &reports {
        let Ok(summary) = &report.result else { continue };
        if summary.replicas.len() > 1 {
            problems.push(FleetProblem::MixedReplicas { chain: report.label.clone(), replicas: summary.replicas.clone() });
        }
        for replica in &summary.replicas {
            match owners.iter_mut().find(|(name, _)| name == replica) {
                Some((_, labels)) => labels.push(report.label.clone()),
                None => owners.push((replica.clone(), vec![report.label.clone()])),
            }
        }
    }
    for (replica, labels) in owners {
        if labels.len() > 1 {
            problems.push(FleetProblem::SharedReplica { replica, chains: labels });
        }
    }
    FleetReport { chains: reports, problems }
}
