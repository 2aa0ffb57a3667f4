//! The README's figures are the saved run's: its table is what `banyan-bench readme-table
//! docs/bench/bench.json` makes of that run, never typed by hand.

use std::path::Path;

#[test]
fn the_readme_s_table_is_made_from_the_saved_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/bench/bench.json")).expect("the saved run"),
    )
    .expect("bench.json is JSON");
    let table = banyan_bench::readme::readme_table(&run).expect("the table");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("the README");
    assert!(
        readme.contains(&table),
        "README.md's figures are not the saved run's; put this table in its place \
         (`cargo run -p banyan-bench -- readme-table docs/bench/bench.json`):\n{table}"
    );
}
