//! `banyan data move`: a module's whole storage copied to another database, checked table by
//! table, and the setting that switches the module to it. The last step of the strangler fig:
//! a module that already runs in a process of its own gets a database server of its own.

use std::collections::BTreeMap;

use banyan_db::{CopyReport, DatabaseConfig, Db, Location, ModuleDatabaseConfig};

use crate::config::Settings;

/// Copies module `module`'s storage from where the configuration puts it to `to` (empty, or
/// not there yet: it is provisioned and migrated first), checks it, and prints the report and
/// the setting to switch to. The module's processes must be stopped first: events for it wait
/// in the other modules' outboxes or in the stream meanwhile.
pub(crate) async fn move_module(settings: &Settings, module: &str, to: &str) -> anyhow::Result<()> {
    let found = crate::modules::all_modules()
        .into_iter()
        .find(|m| m.name() == module)
        .ok_or_else(|| {
            let names: Vec<&str> = crate::modules::all_modules()
                .iter()
                .map(|m| m.name())
                .collect();
            anyhow::anyhow!("no module named {module}; modules are {}", names.join(", "))
        })?;
    let name = found.name();
    let target_location: Location = to.parse()?;
    let source_location = settings.database.location_for(name)?;
    anyhow::ensure!(
        source_location != target_location,
        "module {name}'s data is already at {}",
        redacted(to)
    );
    // The same migrations as the module's processes run, at both ends.
    let migrators = [
        &*banyan_bus::MESSAGING_MIGRATIONS,
        &*crate::revocation::REVOCATION_MIGRATIONS,
        found.migrations(),
    ];
    let source = Db::open(name, &settings.database, &migrators).await?;
    let target_config = DatabaseConfig {
        modules: BTreeMap::from([(name.to_owned(), ModuleDatabaseConfig { url: to.to_owned() })]),
        ..settings.database.clone()
    };
    let target = Db::open(name, &target_config, &migrators).await?;
    eprintln!("Copying the data of module {name} to {} ...", redacted(to));
    let report = source.copy_into(&target).await;
    source.close().await;
    target.close().await;
    let report = report?;
    print!("{}", describe(name, &report));
    anyhow::ensure!(
        report.verified(),
        "the copy differs from the source (see the tables marked DIFFERS); keep module {name} \
         on its current database"
    );
    println!(
        "\nVerified. Switch module {name} to it in every process's configuration, then start its \
         processes again:\n\n[database.modules.{name}]\nurl = \"{}\"\n\n\
         # or: BANYAN_DATABASE__MODULES__{}__URL={}",
        redacted(to),
        name.to_ascii_uppercase(),
        redacted(to)
    );
    Ok(())
}

/// The report as a table: each table's rows and checksum at both ends.
fn describe(module: &str, report: &CopyReport) -> String {
    let mut out = format!(
        "\nModule {module}: {} table(s) copied\n\n{:<24} {:>8} {:>8}  {:<34} result\n",
        report.tables.len(),
        "table",
        "source",
        "target",
        "checksum (source = target)"
    );
    for check in &report.tables {
        out.push_str(&format!(
            "{:<24} {:>8} {:>8}  {:032x}  {}\n",
            check.table,
            check.source.rows,
            check.target.rows,
            check.source.checksum,
            if check.matches() { "ok" } else { "DIFFERS" }
        ));
    }
    for (history, versions) in &report.histories {
        let versions: Vec<String> = versions.iter().map(i64::to_string).collect();
        out.push_str(&format!(
            "migration history {history}: versions {} at both ends\n",
            versions.join(", ")
        ));
    }
    out
}

/// `url` with its password, if any, replaced by `****`: the line is printed, and may be pasted
/// into a ticket.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_url_hides_its_password() {
        assert_eq!(
            redacted("postgres://orders:s3cret@db2:5432/shop"),
            "postgres://orders:****@db2:5432/shop"
        );
        assert_eq!(redacted("sqlite://data2"), "sqlite://data2");
    }
}
