//! `[[target]]`, checked: the quotas that serve a job's records. A job without the table has one target, made of
//! `[model]`, `[budget]` and `[endpoint]`, named by its model id as every message named the model before targets
//! existed.

use std::path::Path;

use super::check::{Checker, MAX_RATE, at_most, endpoint_url, positive};
use super::error::JobError;
use super::settings::{BudgetSettings, Endpoint, ModelSettings, Target};
use super::spec::TargetTable;

/// The job's targets, in the order written; at least one.
pub(super) fn targets(
    c: &Checker<'_>,
    tables: &[TargetTable],
    model: &ModelSettings,
    (budget, endpoint): (&BudgetSettings, &Endpoint),
    dir: &Path,
) -> Result<Vec<Target>, JobError> {
    if tables.is_empty() {
        return Ok(vec![Target {
            name: model.id.clone(),
            model: model.id.clone(),
            region: model.region.clone(),
            endpoint: endpoint.clone(),
            rpm: budget.rpm,
            tpm: budget.tpm,
            service_tier: model.service_tier,
        }]);
    }
    let mut targets = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        targets.push(target(
            c,
            &format!("target[{}]", i + 1),
            t,
            model,
            (budget, endpoint),
            dir,
        )?);
    }
    name_targets(c, tables, &mut targets)?;
    Ok(targets)
}

/// One `[[target]]`, its name left to [`name_targets`] when the table gives none.
fn target(
    c: &Checker<'_>,
    key: &str,
    t: &TargetTable,
    model: &ModelSettings,
    (budget, endpoint): (&BudgetSettings, &Endpoint),
    dir: &Path,
) -> Result<Target, JobError> {
    let text =
        |v: &Option<toml::Spanned<String>>, field: &str| -> Result<Option<String>, JobError> {
            match v {
                Some(s) if s.get_ref().trim().is_empty() => Err(c.at(
                    s.span(),
                    format!("{key}.{field} must not be empty; leave it out for the job's"),
                )),
                Some(s) => Ok(Some(s.get_ref().trim().to_string())),
                None => Ok(None),
            }
        };
    let rpm = positive(
        c,
        &t.rpm,
        &format!("{key}.rpm"),
        "leave it out for budget.rpm",
    )?;
    let tpm = positive(
        c,
        &t.tpm,
        &format!("{key}.tpm"),
        "leave it out for budget.tpm",
    )?;
    for (v, field) in [(&t.rpm, "rpm"), (&t.tpm, "tpm")] {
        at_most(
            c,
            v.as_ref(),
            MAX_RATE,
            &format!("{key}.{field}"),
            "leave it out for no limit",
        )?;
    }
    if let (Some(tpm), Some(s), Some(max)) = (tpm, &t.tpm, model.max_tokens)
        && tpm <= u64::from(max)
    {
        return Err(c.at(
            s.span(),
            format!(
                "{key}.tpm = {tpm} cannot hold a single request: each request reserves its input tokens + \
                 model.max-tokens ({max}) while it runs. Raise it to the target's real quota or lower \
                 model.max-tokens"
            ),
        ));
    }
    let own_endpoint = endpoint_url(
        c,
        key,
        (t.url.as_ref(), t.emulator_profile.as_ref()),
        t.allow_insecure_http,
        dir,
    )?;
    Ok(Target {
        name: text(&t.name, "name")?.unwrap_or_default(),
        model: text(&t.model, "model")?.unwrap_or_else(|| model.id.clone()),
        region: text(&t.region, "region")?.or_else(|| model.region.clone()),
        endpoint: own_endpoint.unwrap_or_else(|| endpoint.clone()),
        rpm: rpm.or(budget.rpm),
        tpm: tpm.or(budget.tpm),
        service_tier: t.service_tier.or(model.service_tier),
    })
}

/// Names the targets the job file left unnamed, by what tells them apart, and refuses two of one name.
fn name_targets(
    c: &Checker<'_>,
    tables: &[TargetTable],
    targets: &mut [Target],
) -> Result<(), JobError> {
    let first = targets[0].clone();
    let one_model = targets.iter().all(|t| t.model == first.model);
    let one_region = targets.iter().all(|t| t.region == first.region);
    for t in targets.iter_mut().filter(|t| t.name.is_empty()) {
        let region = t.region.as_deref().unwrap_or("default-region");
        t.name = match (one_model, one_region) {
            (true, false) => region.to_string(),
            (false, true) => t.model.clone(),
            _ => format!("{}@{region}", t.model),
        };
    }
    for (i, t) in targets.iter().enumerate() {
        if let Some(j) = targets[..i].iter().position(|o| o.name == t.name) {
            let message = format!(
                "target[{}] and target[{}] are both named {:?}: two targets of one job need different names, \
                 regions, models or endpoints; give each a `name = \"…\"`",
                j + 1,
                i + 1,
                t.name
            );
            return Err(match &tables[i].name {
                Some(s) => c.at(s.span(), message),
                None => c.plain(message),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::job::{Endpoint, Job, Target};

    const JOB: &str = "[job]\nname = \"t\"\n[model]\nid = \"m\"\nregion = \"us-east-1\"\nmax-tokens = 100\n\
                       [input]\npath = \"src\"\nformat = \"documents\"\n[budget]\ntpm = 5000\n[output]\npath = \"out\"\n";

    fn parse(extra: &str) -> Result<Job, String> {
        Job::parse(&format!("{JOB}{extra}"), Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_job_without_targets_has_one_made_of_its_model_budget_and_endpoint() {
        let job = parse("").unwrap();
        assert_eq!(
            job.targets,
            [Target {
                name: "m".into(),
                model: "m".into(),
                region: Some("us-east-1".into()),
                endpoint: Endpoint::Aws,
                rpm: None,
                tpm: Some(5000),
                service_tier: None,
            }]
        );
        // The job as its one target serves it is the job.
        let served = job.for_target(0);
        assert_eq!(
            (served.model.id, served.budget.tpm),
            (job.model.id, job.budget.tpm)
        );
    }

    #[test]
    fn targets_take_what_they_leave_out_from_the_job_and_are_named_by_what_sets_them_apart() {
        let job = parse(
            "[[target]]\n[[target]]\nregion = \"us-west-2\"\ntpm = 8000\nurl = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let names: Vec<&str> = job.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["us-east-1", "us-west-2"]);
        assert_eq!(job.targets[0].tpm, Some(5000));
        assert_eq!(job.targets[1].tpm, Some(8000));
        assert_eq!(
            job.targets[1].endpoint,
            Endpoint::Url("http://127.0.0.1:9".into())
        );
        let west = job.for_target(1);
        assert_eq!(west.model.region.as_deref(), Some("us-west-2"));
        assert_eq!(west.budget.tpm, Some(8000));
        // A profile and the model itself in one region are told apart by model.
        let job = parse("[[target]]\n[[target]]\nmodel = \"us.m\"\n").unwrap();
        let names: Vec<&str> = job.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["m", "us.m"]);
        // The requests (and so the job's fingerprint) are the same whichever targets serve them.
        assert_eq!(job.model.id, "m");
    }

    #[test]
    fn a_bad_target_is_refused_with_its_key() {
        for (extra, says) in [
            (
                "[[target]]\n[[target]]\n",
                "target[1] and target[2] are both named \"m@us-east-1\"",
            ),
            (
                "[[target]]\nname = \"a\"\n[[target]]\nname = \"a\"\nregion = \"eu-west-1\"\n",
                "target[1] and target[2] are both named \"a\"",
            ),
            (
                "[[target]]\ntpm = 100\n",
                "target[1].tpm = 100 cannot hold a single request",
            ),
            (
                "[[target]]\n[[target]]\nregion = \"eu-west-1\"\nurl = \"http://10.0.0.8:8080\"\n",
                "target[2].url is plain http:// to another host",
            ),
            (
                "[[target]]\nmodel = \" \"\n",
                "target[1].model must not be empty",
            ),
            ("[[target]]\nrpm = 0\n", "target[1].rpm must be at least 1"),
            ("[[target]]\nregoin = \"x\"\n", "unknown field `regoin`"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
    }
}
