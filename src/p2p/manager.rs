//! The manager client: which schedulers this daemon announces to, when `scheduler.manager.enable`
//! is set. On the control-plane thread it asks the managers (in order, the first that answers
//! wins) `manager.v2.Manager/ListSchedulers` with this host's identity, keeps the active
//! schedulers of one cluster, hands them to the scheduler client (`Sched::use_schedulers`), and
//! asks again every `refreshInterval` — every `MANAGER_RETRY_INTERVAL` while it has none from the
//! manager.
//!
//! Invariant: the manager never fails a download. Unreachable, it leaves the schedulers it gave
//! before in use (as Dragonfly's dfget keeps its cached answer), else the static
//! `scheduler.netAddrs`; answering with no scheduler, the static list; with neither, no scheduler
//! is in use and downloads go to the origin. Each change of what is in use is logged once (a
//! warning for every fallback), not at every retry.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tonic::transport::Channel;

use crate::config::MAX_SCHEDULERS;
use crate::limits;
use crate::p2p::node::{lazy_channel, Node, Sched};
use crate::p2p::pb::manager as m;

/// Where the schedulers in use came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The manager's latest answer.
    Manager,
    /// The manager's last answer with schedulers, kept while it is unreachable.
    Remembered,
    /// `scheduler.netAddrs`.
    Static,
    /// Nothing: downloads go to the origin.
    None,
}

/// What one refresh decided.
#[derive(Debug, PartialEq)]
pub struct Choice {
    pub schedulers: Vec<String>,
    pub source: Source,
}

/// The schedulers of a ListSchedulers answer this daemon may use: active, with an IP address and
/// a port, of the cluster of the first such scheduler (as Dragonfly's dfget resolves them), each
/// once, at most `MAX_SCHEDULERS`, in the manager's order.
pub fn usable(listed: &[m::Scheduler]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cluster = None;
    for s in listed {
        let (Ok(ip), Ok(port)) = (s.ip.parse::<IpAddr>(), u16::try_from(s.port)) else { continue };
        if s.state != "active" || port == 0 || *cluster.get_or_insert(s.scheduler_cluster_id) != s.scheduler_cluster_id
        {
            continue;
        }
        let addr = SocketAddr::new(ip, port).to_string();
        if !out.contains(&addr) {
            out.push(addr);
        }
        if out.len() == MAX_SCHEDULERS {
            break;
        }
    }
    out
}

/// The schedulers to use after a refresh: the manager's answer (its usable schedulers, or why
/// it could not be asked), what it gave before, and the static list.
pub fn choose(answer: &Result<Vec<String>, String>, remembered: &[String], fixed: &[String]) -> Choice {
    let fallback = || match fixed.is_empty() {
        true => Choice { schedulers: Vec::new(), source: Source::None },
        false => Choice { schedulers: fixed.to_vec(), source: Source::Static },
    };
    match answer {
        Ok(listed) if !listed.is_empty() => Choice { schedulers: listed.clone(), source: Source::Manager },
        // The manager knows of no live scheduler: those it gave before have stopped too.
        Ok(_) => fallback(),
        // Unreachable: the schedulers it gave may well still be up.
        Err(_) if !remembered.is_empty() => Choice { schedulers: remembered.to_vec(), source: Source::Remembered },
        Err(_) => fallback(),
    }
}

/// What a dfdaemon tells the manager about itself; the manager's searcher picks the scheduler
/// cluster from it (idc, location, the IP against the clusters' CIDR scopes).
fn request(node: &Node) -> m::ListSchedulersRequest {
    m::ListSchedulersRequest {
        source_type: m::SourceType::PeerSource as i32,
        hostname: node.hostname.clone(),
        ip: node.ip.to_string(),
        idc: node.config.idc.clone(),
        location: node.config.location.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        commit: String::new(),
        scheduler_cluster_id: 0,
    }
}

/// Asks each manager in turn; the first answer wins (managers of one cluster share a database).
async fn ask(node: &Node, managers: &[(String, Channel)]) -> Result<Vec<String>, String> {
    let mut why = Vec::new();
    for (addr, channel) in managers {
        let mut client = m::manager_client::ManagerClient::new(channel.clone());
        match tokio::time::timeout(limits::MANAGER_TIMEOUT, client.list_schedulers(request(node))).await {
            Ok(Ok(answer)) => return Ok(usable(&answer.into_inner().schedulers)),
            Ok(Err(e)) => why.push(format!("{addr}: {} ({:?})", e.message(), e.code())),
            Err(_) => why.push(format!("{addr}: no answer in {:?}", limits::MANAGER_TIMEOUT)),
        }
    }
    if why.is_empty() {
        why.push("no usable manager address".into());
    }
    Err(why.join("; "))
}

/// Keeps the scheduler list in use from the managers' answers, for the daemon's lifetime.
pub async fn refresh_loop(sched: Arc<Sched>) {
    let config = &sched.node.config;
    let managers: Vec<(String, Channel)> =
        config.managers.iter().filter_map(|a| Some((a.clone(), lazy_channel(a)?))).collect();
    let mut remembered: Vec<String> = Vec::new();
    let mut said: Option<(Source, Vec<String>)> = None;
    loop {
        let answer = ask(&sched.node, &managers).await;
        let choice = choose(&answer, &remembered, &config.schedulers);
        if choice.source == Source::Manager {
            remembered = choice.schedulers.clone();
        }
        sched.use_schedulers(&choice.schedulers);
        if said.as_ref() != Some(&(choice.source, choice.schedulers.clone())) {
            log_choice(&config.managers, &answer, &choice);
            said = Some((choice.source, choice.schedulers.clone()));
        }
        let wait = match choice.source {
            Source::Manager => config.manager_refresh_interval,
            _ => limits::MANAGER_RETRY_INTERVAL.min(config.manager_refresh_interval),
        };
        tokio::time::sleep(wait).await;
    }
}

fn log_choice(managers: &[String], answer: &Result<Vec<String>, String>, choice: &Choice) {
    let managers = managers.join(", ");
    let list = choice.schedulers.join(", ");
    let problem = match answer {
        Ok(_) => "lists no active scheduler".to_string(),
        Err(why) => format!("is unreachable ({why})"),
    };
    match choice.source {
        Source::Manager => tracing::info!(managers = %managers, "schedulers from the manager: {list}"),
        Source::Remembered => {
            tracing::warn!("the manager {problem}: keeping the schedulers it gave before: {list}")
        }
        Source::Static => tracing::warn!("the manager {problem}: using scheduler.netAddrs: {list}"),
        Source::None => tracing::warn!(
            managers = %managers,
            "the manager {problem}: no scheduler is known, downloads go to the origin"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(ip: &str, port: i32, state: &str, cluster: u64) -> m::Scheduler {
        m::Scheduler { ip: ip.into(), port, state: state.into(), scheduler_cluster_id: cluster, ..Default::default() }
    }

    #[test]
    fn usable_keeps_active_addressable_schedulers_of_one_cluster_once() {
        let check = |listed: Vec<m::Scheduler>, want: &[&str]| assert_eq!(usable(&listed), want, "{listed:?}");
        check(vec![], &[]);
        check(vec![sched("10.0.0.1", 8002, "active", 1)], &["10.0.0.1:8002"]);
        check(vec![sched("10.0.0.1", 8002, "inactive", 1)], &[]);
        check(vec![sched("scheduler-0", 8002, "active", 1), sched("", 8002, "active", 1)], &[]);
        check(vec![sched("10.0.0.1", 0, "active", 1), sched("10.0.0.1", 70000, "active", 1)], &[]);
        check(vec![sched("fd00::1", 8002, "active", 1)], &["[fd00::1]:8002"]);
        check(
            vec![
                sched("10.0.0.1", 8002, "inactive", 2),
                sched("10.0.0.2", 8002, "active", 1),
                sched("10.0.0.3", 8002, "active", 2),
                sched("10.0.0.2", 8002, "active", 1),
                sched("10.0.0.4", 8003, "active", 1),
            ],
            &["10.0.0.2:8002", "10.0.0.4:8003"],
        );
        let many: Vec<_> = (0..40).map(|i| sched(&format!("10.0.1.{i}"), 8002, "active", 1)).collect();
        assert_eq!(usable(&many).len(), MAX_SCHEDULERS);
    }

    #[test]
    fn choose_prefers_the_manager_then_its_last_answer_then_the_static_list() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let check = |answer: Result<Vec<String>, String>,
                     remembered: &[&str],
                     fixed: &[&str],
                     want: (&[&str], Source)| {
            let got = choose(&answer, &v(remembered), &v(fixed));
            assert_eq!(got, Choice { schedulers: v(want.0), source: want.1 }, "{answer:?} {remembered:?} {fixed:?}");
        };
        let down = || Err("refused".to_string());
        check(Ok(v(&["m:1"])), &["old:1"], &["s:1"], (&["m:1"], Source::Manager));
        check(Ok(v(&[])), &["old:1"], &["s:1"], (&["s:1"], Source::Static));
        check(Ok(v(&[])), &["old:1"], &[], (&[], Source::None));
        check(down(), &["old:1"], &["s:1"], (&["old:1"], Source::Remembered));
        check(down(), &[], &["s:1"], (&["s:1"], Source::Static));
        check(down(), &[], &[], (&[], Source::None));
    }
}
