//! Integration configs over the control plane: validation, writes only over the revision
//! read, new integrations, and smart mapping.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_validated_and_written_only_over_the_revision_read() {
    let stack = Stack::without_extractor().await;
    let mut client = stack.client().await;

    // The loader seeded the default config.
    let stored = get_config(&mut client).await;
    assert!(stored.revision > 0);
    assert!(stored.toml.contains("sync_keys = [\"EMAIL\"]"));
    assert!(!stored.pause.unwrap().paused);

    // Validation reports every problem and stores nothing.
    let broken = stored
        .toml
        .replace("sync_keys = [\"EMAIL\"]", "sync_keys = [\"NOPE\"]")
        .replace("source = \"Job Title\"", "source = \"Job Titel\"")
        + "\nsurprise = true\n";
    let report = client
        .validate_integration(pb::ValidateIntegrationRequest {
            toml: broken.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!report.valid);
    assert!(report.problems.len() >= 3, "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.kind == "unknown_key"));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("Job Titel"))
    );
    assert!(
        client
            .validate_integration(pb::ValidateIntegrationRequest { toml: fixed_toml() })
            .await
            .unwrap()
            .into_inner()
            .valid
    );

    // An invalid config is refused with every message, and nothing changes.
    let status = put_config(&mut client, broken, stored.revision)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for problem in &report.problems {
        assert!(
            status.message().contains(&problem.message),
            "{} lacks {}",
            status.message(),
            problem.message
        );
    }
    assert!(status.message().contains("nothing was stored"));

    // A config stored under another integration's name is refused.
    let status = client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: "other".into(),
            toml: default_toml(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "\"other\"");

    // The revision read wins once; the same revision again is stale.
    let written = put_config(&mut client, fixed_toml(), stored.revision)
        .await
        .unwrap();
    assert!(written.revision > stored.revision);
    let status = put_config(&mut client, default_toml(), stored.revision)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains(&format!(
            "revision {} of integration sage-people is stale",
            stored.revision
        )) && status
            .message()
            .contains(&format!("at revision {} now", written.revision)),
        "{}",
        status.message()
    );
    let status = put_config(&mut client, default_toml(), 0)
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "already has a config");
    let now = get_config(&mut client).await;
    assert_eq!(now.revision, written.revision);
    assert_eq!(now.toml, fixed_toml());

    // A new integration is created with revision 0; an unknown one is NOT_FOUND.
    let acme = default_toml().replace("id = \"sage-people\"", "id = \"acme\"");
    client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: "acme".into(),
            toml: acme,
            revision: 0,
        })
        .await
        .unwrap();
    let status = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "PutIntegration");

    // Smart mapping: Email goes to Username and Email, ID to the unique Sage User ID field.
    let suggested = client
        .suggest_mapping(pb::SuggestMappingRequest {
            integration_id: INTEGRATION.into(),
            additional_fields: vec!["Cost Centre".into()],
            custom_fields: vec![pb::TargetField {
                id: "AAAABBBBCCCCDDDDEEEEFFFF00001111".into(),
                label: "Cost Centre".into(),
                unique: false,
            }],
            include_default_custom_fields: true,
        })
        .await
        .unwrap()
        .into_inner();
    let target = |source: &str| -> Vec<String> {
        suggested
            .suggestions
            .iter()
            .filter(|s| s.source_kind == "source" && s.source == source)
            .map(|s| s.field.clone())
            .collect()
    };
    assert_eq!(target("Email"), ["USER", "EMAIL"]);
    assert_eq!(target("ID"), [peoplesync_core::SAGE_USER_ID_FIELD]);
    assert_eq!(target("Cost Centre"), ["AAAABBBBCCCCDDDDEEEEFFFF00001111"]);
    assert!(suggested.toml.contains("[[mapping]]"));
    assert!(
        suggested
            .suggestions
            .iter()
            .any(|s| s.field == "PERMISSIONS_ID" && s.source == "default_role")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_naming_a_field_oomnitza_does_not_know_exits_6_as_the_exit_table_says() {
    let stack = Stack::without_extractor().await;
    let mut client = stack.client().await;
    let stored = get_config(&mut client).await;
    let typo = stored
        .toml
        .replace("field = \"POSITION\"", "field = \"POSITON\"");
    assert_ne!(typo, stored.toml, "the default config maps POSITION");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, typo).unwrap();
    let revision = stored.revision.to_string();
    let put = syncctl(
        &stack,
        &[
            "integration",
            "put",
            file.to_str().unwrap(),
            "--revision",
            &revision,
        ],
    );
    assert_eq!(put.code, 6, "{}", put.stderr);
    assert!(put.stderr.contains("POSITON"), "{}", put.stderr);
    assert_eq!(get_config(&mut client).await.revision, stored.revision);

    let page = include_str!("../../../docs/control-plane.md");
    let row = page
        .lines()
        .find(|l| l.starts_with("| 6 |"))
        .expect("the exit table has a row for 6");
    assert!(
        row.contains("`integration put` of a config naming a field id Oomnitza does not know"),
        "{row}"
    );
}
