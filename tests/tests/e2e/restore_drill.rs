//! The restore drill script on a small data set: dump, restore, verify,
//! rebuild, and the service answering on the copy.

use std::process::Command;

use nepxy_tests::{payout_body, server_url, spawn_app, tmoney_report};
use reqwest::StatusCode;

#[tokio::test]
async fn restore_drill_passes() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(20_000, "XOF").await;
    for key in ["drill-1", "drill-2"] {
        let reply = app
            .post_payout(&client, key, &payout_body(1_500, "tmoney"))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let payout_id = reply.body["id"].as_str().expect("payout id").to_owned();
        let settled = app
            .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 1_500, "XOF"))
            .await;
        assert_eq!(settled.status, StatusCode::OK, "{:?}", settled.body);
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/restore-drill.sh");
    let output = Command::new("bash")
        .arg(script)
        .env("SOURCE_URL", &app.database_url)
        .env("TARGET_URL", server_url())
        .env("DRILL_PORT", port.to_string())
        .output()
        .expect("run the restore drill");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "drill failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("verify: ok"),
        "verify ran on the copy: {stdout}"
    );
    assert!(
        stdout.contains("payouts: identical"),
        "rebuild compared the copy: {stdout}"
    );
    assert!(
        stdout.contains("payouts listed: 2 (read model holds 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("restore drill passed"), "{stdout}");

    let leftovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'nepxy_restore_%'")
            .fetch_one(&app.pool)
            .await
            .expect("list databases");
    assert_eq!(leftovers, 0, "the restored database is dropped afterwards");
}
