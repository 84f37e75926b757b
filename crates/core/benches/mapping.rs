//! Cost of the per-event work in the loader: filter + map of one worker with the default
//! 17-field mapping (target: under 5 µs), and variants. Run with
//! `cargo bench -p peoplesync-core --bench mapping`; figures go in `docs/benchmarks.md`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use peoplesync_core::defaults::FULL_ADDRESS_TEMPLATE;
use peoplesync_core::fixtures;
use peoplesync_core::{
    FilterMode, Integration, IntegrationConfig, RecordInput, Worker, record_hash, record_json,
};

fn bench(c: &mut Criterion) {
    let raw = fixtures::ada();
    let worker = Worker::from_raw(&raw).expect("bench record normalises");
    let tracking = fixtures::tracking();
    let input = RecordInput {
        raw: &raw,
        worker: &worker,
        tracking: &tracking,
    };
    let compile =
        |config: IntegrationConfig| Integration::compile(config).expect("bench config is valid");

    let default = IntegrationConfig::default_for("bench");
    let full_address = fixtures::with_template(default.clone(), "ADDRESS", FULL_ADDRESS_TEMPLATE);
    let custom_api = fixtures::with_template(
        default.clone(),
        "POSITION",
        "{{ response.currentEmployment.jobTitle | default('Unknown') }}",
    );
    let mut region = default.clone();
    region.filter.mode = FilterMode::IfConditions;
    region.filter.condition = Some("worker.employment_active and worker.region == 'EMEA'".into());

    let mut group = c.benchmark_group("filter_and_map");
    for (name, config) in [
        ("default_17_fields", default.clone()),
        ("default_with_region_condition", region),
        ("default_with_full_address_template", full_address),
        ("default_with_response_template", custom_api),
    ] {
        let integration = compile(config);
        group.bench_function(name, |b| {
            b.iter(|| black_box(integration.evaluate(black_box(&input))))
        });
    }
    group.finish();

    let integration = compile(default.clone());
    let record = integration
        .evaluate(&input)
        .record()
        .cloned()
        .unwrap_or_default();
    c.bench_function("record_hash/default_record", |b| {
        b.iter(|| black_box(record_hash(black_box(&record))))
    });
    c.bench_function("record_json/default_record", |b| {
        b.iter(|| black_box(record_json(black_box(&record))))
    });
    c.bench_function("compile/default_config", |b| {
        b.iter(|| black_box(compile(default.clone())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
