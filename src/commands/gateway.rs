//! `mcpgw gateway add|list|show|remove`, through the control socket.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::{GatewayAddArgs, GatewayCommand};
use crate::config::{self, GlobalPaths};
use crate::control::client::ControlClient;

/// Run a gateway subcommand.
pub async fn run(cmd: GatewayCommand, globals: &GlobalPaths, json_out: bool) -> anyhow::Result<()> {
    let client = ControlClient::new(config::client_socket(globals));
    match cmd {
        GatewayCommand::Add(args) => {
            let body = add_body(&args)?;
            let view = client.post("/gateways", Some(&body)).await?;
            if json_out {
                return super::print_json(&view);
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "registered {}: {}", args.name, summary(&view))?;
            Ok(())
        }
        GatewayCommand::List => {
            let list = client.get("/gateways").await?;
            if json_out {
                return super::print_json(&list);
            }
            let mut out = std::io::stdout().lock();
            let items = list.as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                writeln!(out, "no upstreams registered")?;
            }
            for item in items {
                writeln!(
                    out,
                    "{:<24} {}",
                    item["name"].as_str().unwrap_or("?"),
                    summary(&item)
                )?;
            }
            Ok(())
        }
        GatewayCommand::Show { name } => {
            let view = client.get(&format!("/gateways/{}", encode(&name))).await?;
            if json_out {
                return super::print_json(&view);
            }
            print_show(&view)
        }
        GatewayCommand::Remove { name } => {
            client
                .request("DELETE", &format!("/gateways/{}", encode(&name)), None)
                .await?;
            if json_out {
                return super::print_json(&json!({"removed": name}));
            }
            println!("removed {name}");
            Ok(())
        }
    }
}

fn encode(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

/// Paths are made absolute here: the gateway may run in another directory.
fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(abs.display().to_string())
}

fn add_body(args: &GatewayAddArgs) -> anyhow::Result<Value> {
    let mut body = json!({
        "name": args.name,
        "url": args.url.clone().unwrap_or_default(),
        "defer": args.defer,
        "era": args.era.as_str(),
        "shared_session": args.shared_session,
    });
    if let Some(t) = args.transport {
        body["transport"] = json!(t.as_str());
    }
    let settings = args.tls.settings()?;
    let mut tls = serde_json::Map::new();
    for (key, source) in [
        ("ca_cert", &settings.ca),
        ("client_cert", &settings.client_cert),
        ("client_key", &settings.client_key),
    ] {
        if let Some(crate::store::PemSource::Path(p)) = source {
            tls.insert(key.into(), json!(p.display().to_string()));
        }
    }
    if let Some(n) = &settings.server_name {
        tls.insert("server_name".into(), json!(n));
    }
    body["tls_config"] = Value::Object(tls);
    if let Some(b) = &args.bearer {
        body["bearer"] = json!(b);
    }
    if !args.headers.is_empty() {
        body["headers"] = json!(args.headers);
    }
    if let Some(program) = &args.command {
        add_command(&mut body, program, args)?;
    }
    Ok(body)
}

/// A stdio upstream's part of the body. A program given as a path, the env file and the
/// working directory are made absolute, as TLS paths are: the gateway runs elsewhere.
fn add_command(body: &mut Value, program: &str, args: &GatewayAddArgs) -> anyhow::Result<()> {
    let program = if program.contains('/') {
        absolute(Path::new(program))?
    } else {
        program.to_owned()
    };
    body["command"] = json!(program);
    body["args"] = json!(args.args);
    body["env"] = json!(args.env);
    if let Some(p) = &args.env_file {
        body["env_file"] = json!(absolute(p)?);
    }
    if let Some(p) = &args.cwd {
        body["cwd"] = json!(absolute(p)?);
    }
    body["isolate"] = json!(args.isolate);
    body["inherit_env"] = json!(args.inherit_env);
    body["limits"] = json!({
        "memory_mib": args.memory_mib,
        "open_files": args.open_files,
        "cpu_secs": args.cpu_secs,
    });
    Ok(())
}

/// Where an upstream is: its URL, or for a stdio upstream its command line.
fn location(view: &Value) -> String {
    let command = &view["command"];
    match command["program"].as_str() {
        Some(program) => {
            let mut line = program.to_owned();
            for arg in command["args"].as_array().into_iter().flatten() {
                line.push(' ');
                line.push_str(arg.as_str().unwrap_or("?"));
            }
            line
        }
        None => view["url"].as_str().unwrap_or("?").to_owned(),
    }
}

fn summary(view: &Value) -> String {
    let tools = view["tools"].as_array().map(Vec::len).unwrap_or(0);
    format!(
        "{} ({}, {}{}), {} tools, {}",
        view["health"]["status"].as_str().unwrap_or("?"),
        view["transport"].as_str().unwrap_or("?"),
        view["era"].as_str().unwrap_or("not connected"),
        view["protocol_version"]
            .as_str()
            .map(|v| format!(" {v}"))
            .unwrap_or_default(),
        tools,
        location(view),
    )
}

fn print_show(view: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
    writeln!(out, "name        {}", s(&view["name"]))?;
    let command = &view["command"];
    if command.is_object() {
        writeln!(out, "command     {}", location(view))?;
        let names: Vec<&str> = command["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        writeln!(out, "env         {}", names.join(" "))?;
        writeln!(out, "env file    {}", s(&command["env_file"]))?;
        writeln!(out, "cwd         {}", s(&command["cwd"]))?;
        let pid = command["pid"]
            .as_u64()
            .map_or("-".to_owned(), |p| p.to_string());
        writeln!(out, "pid         {pid}")?;
    } else {
        writeln!(out, "url         {}", s(&view["url"]))?;
    }
    writeln!(out, "transport   {}", s(&view["transport"]))?;
    writeln!(
        out,
        "enabled     {}",
        if view["enabled"] == Value::Bool(false) {
            "no (not started, not checked, not routed to)"
        } else {
            "yes"
        }
    )?;
    writeln!(
        out,
        "protocol    {} {}",
        s(&view["era"]),
        s(&view["protocol_version"])
    )?;
    let sessions = if command["isolate"] == Value::Bool(true) {
        format!(
            "one child per client (--isolate; {} open)",
            view["client_sessions"].as_u64().unwrap_or(0)
        )
    } else if command.is_object() {
        "one child shared by every client".to_owned()
    } else if view["shared_session"] == Value::Bool(true) {
        "shared by every client (--shared-session)".to_owned()
    } else {
        format!(
            "one per client ({} open)",
            view["client_sessions"].as_u64().unwrap_or(0)
        )
    };
    writeln!(out, "era setting {}", s(&view["era_setting"]))?;
    writeln!(out, "sessions    {sessions}")?;
    writeln!(
        out,
        "health      {} since {}",
        s(&view["health"]["status"]),
        s(&view["health"]["since"])
    )?;
    if let Some(err) = view["health"]["last_error"].as_str() {
        writeln!(out, "last error  {err}")?;
    }
    // TLS and upstream auth belong to HTTP upstreams; a stdio one showed its program above.
    if !command.is_object() {
        writeln!(out, "ca cert     {}", s(&view["tls"]["ca_cert"]))?;
        writeln!(
            out,
            "client cert {} {}",
            s(&view["tls"]["client_cert"]),
            s(&view["tls"]["client_subject"])
        )?;
        writeln!(out, "server name {}", s(&view["tls"]["server_name"]))?;
        writeln!(
            out,
            "bearer      {}",
            if view["auth"]["bearer"].as_bool() == Some(true) {
                "set"
            } else {
                "-"
            }
        )?;
    }
    let tools: Vec<String> = view["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    writeln!(out, "tools       {}", tools.join(", "))?;
    for w in view["warnings"].as_array().into_iter().flatten() {
        writeln!(out, "warning     {}", s(w))?;
    }
    Ok(())
}
