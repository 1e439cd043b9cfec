//! Every field of a stdio registration is a declared one (issue 21), over `POST /gateways` and
//! in `mcpgw.toml`'s `[[upstream]]`: a misspelt field is refused naming it, never dropped in
//! silence (a misspelt `inherit_env` or limit would otherwise run the child other than asked),
//! and the right ones register the upstream. The stdio upstream is the Rust fixture with
//! `--stdio`.

mod common;

use common::{Dir, Gateway};
use serde_json::{Value, json};

/// What lets the anonymous administrator of `--no-auth` register commands over HTTP.
const ALLOW: &str = "[upstreams]\nallow_commands_over_http = true\n";

/// The stdio fixture's program.
fn fixture() -> String {
    common::upstream::binary().display().to_string()
}

/// `METHOD /gateways[/NAME]` with `body`: (status, body).
fn send(gw: &Gateway, method: reqwest::Method, path: &str, body: &Value) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let answer = common::clients::http(None)
            .request(method, format!("http://{}{path}", gw.addr))
            .json(body)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    })
}

/// `mcpgw call tools/call NAME {"text": "hi"}` through the control socket: the text answered.
fn echo(dir: &Dir, tool: &str) -> String {
    let params = json!({"name": tool, "arguments": {"text": "hi"}}).to_string();
    let (out, _) = dir.run_expect(&["call", "tools/call", &params], 0);
    let result: Value = serde_json::from_str(&out).unwrap();
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The registered upstream `name`'s `command` view.
fn command_of(dir: &Dir, name: &str) -> Value {
    let (out, _) = dir.run_expect(&["--json", "gateway", "show", name], 0);
    serde_json::from_str::<Value>(&out).unwrap()["command"].clone()
}

#[test]
fn a_misspelt_field_over_http_gets_400_naming_it_and_the_declared_fields_register() {
    let dir = Dir::new();
    std::fs::write(dir.join("mcpgw.toml"), ALLOW).unwrap();
    std::fs::write(dir.join("fields.env"), "FROM_FILE=1\n").unwrap();
    let config = dir.join("mcpgw.toml").display().to_string();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", &config]);
    let right = json!({
        "name": "fields",
        "command": fixture(),
        "args": ["--stdio", "--name", "fields"],
        "env": {"FIELDS_KEY": "k-4d1f"},
        "env_file": dir.join("fields.env"),
        "cwd": dir.path(),
        "isolate": false,
        "inherit_env": false,
        "limits": {"open_files": 256},
    });

    let misspelt = |field: &str, value: Value| {
        let mut body = right.clone();
        body[field] = value;
        body
    };
    for (body, field) in [
        (misspelt("comand", json!("/bin/sh")), "comand"),
        (misspelt("inherit-env", json!(true)), "inherit-env"),
        (misspelt("isloate", json!(true)), "isloate"),
        (misspelt("envFile", json!("/etc/passwd")), "envFile"),
        (misspelt("limits", json!({"memory": 64})), "memory"),
    ] {
        let (status, answer) = send(&gw, reqwest::Method::POST, "/gateways", &body);
        assert_eq!(status, 400, "{field}: {answer}");
        assert!(
            answer.contains(&format!("unknown field `{field}`")),
            "{field} not named: {answer}"
        );
    }
    let (out, _) = dir.run_expect(&["--json", "gateway", "list"], 0);
    assert_eq!(out.trim(), "[]", "a refused body registered something");

    let (status, answer) = send(&gw, reqwest::Method::POST, "/gateways", &right);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(echo(&dir, "fields__echo"), "hi");
    let command = command_of(&dir, "fields");
    assert_eq!(command["env"], json!(["FIELDS_KEY"]), "{command}");
    assert_eq!(command["limits"]["open_files"], 256, "{command}");
    assert!(command["env_file"].is_string() && command["cwd"].is_string());

    // A replacement reads its body the same way.
    let (status, answer) = send(
        &gw,
        reqwest::Method::PUT,
        "/gateways/fields",
        &misspelt("isloate", json!(true)),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("unknown field `isloate`"), "{answer}");
    assert_eq!(command_of(&dir, "fields")["isolate"], false);
}

#[test]
fn a_misspelt_field_in_a_declared_upstream_stops_the_start_naming_the_file_and_field() {
    let dir = Dir::new();
    let file = dir.join("mcpgw.toml");
    let config = file.display().to_string();
    let entry = |more: &str| {
        format!(
            "[[upstream]]\nname = \"decl\"\ncommand = {:?}\nargs = [\"--stdio\"]\n{more}\n",
            fixture()
        )
    };
    for (more, field) in [
        ("inherit-env = true", "inherit-env"),
        ("isloate = true", "isloate"),
        ("limits = { memory = 64 }", "memory"),
    ] {
        std::fs::write(&file, entry(more)).unwrap();
        let (_, stderr) = dir.run_expect(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-auth",
                "--config",
                &config,
            ],
            1,
        );
        assert!(
            stderr.contains(&config),
            "{field}: the file not named: {stderr}"
        );
        assert!(
            stderr.contains(&format!("unknown field `{field}`")),
            "{field} not named: {stderr}"
        );
    }

    std::fs::write(dir.join("decl.env"), "FROM_FILE=1\n").unwrap();
    std::fs::write(
        &file,
        entry(
            "env = { DECL_KEY = \"k-93be\" }\nenv_file = \"decl.env\"\ncwd = \".\"\n\
             isolate = false\ninherit_env = false\nlimits = { open_files = 256 }",
        ),
    )
    .unwrap();
    let _gw = Gateway::start(&dir, &["--no-auth", "--config", &config]);
    assert_eq!(echo(&dir, "decl__echo"), "hi");
    let command = command_of(&dir, "decl");
    assert_eq!(command["env"], json!(["DECL_KEY"]), "{command}");
    assert_eq!(command["limits"]["open_files"], 256, "{command}");
}
