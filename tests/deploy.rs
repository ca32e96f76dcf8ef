//! `deploy/`: every manifest parses (YAML with PyYAML, JSON with serde_json), has the
//! fields its engine requires, agrees with the container's entrypoint, and its
//! sealpipe arguments (or config) run: each is given to the real binary as the engine
//! would (Kubernetes' `$(JOB_COMPLETION_INDEX)` expanded, AWS Batch's array variables
//! set) with `--dry-run`, against moto buckets of the names it uses.

mod common;

use std::path::{Path, PathBuf};

use common::world::World;
use serde_json::{Value, json};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// The documents of a YAML file, as JSON (PyYAML's safe loader).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
        print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))\n";
    let what = format!("{} is not valid YAML", path.display());
    let printed = common::venv_python(&what, script, &[path], b"");
    serde_json::from_str(&printed).unwrap()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

const SUBCOMMANDS: [&str; 6] = ["encrypt", "decrypt", "reencrypt", "rewrap", "verify", "run"];

/// The image's entrypoint, which every engine's arguments follow.
fn entrypoint() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("container/Containerfile")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT "))
        .expect("the Containerfile has an ENTRYPOINT");
    let exec: Value = serde_json::from_str(line.trim_start_matches("ENTRYPOINT ")).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("FROM scratch")),
        "the final image is empty but for sealpipe"
    );
    assert!(
        text.contains("--target x86_64-unknown-linux-musl"),
        "a static binary"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("USER ") && !l.contains(" 0"))
    );
    strings(&exec)
}

/// Runs sealpipe with `args` (what the entrypoint gets) and `env`, as a dry run against
/// moto, in `dir`; it must succeed.
fn dry_run(w: &World, what: &str, args: &[String], env: &[(&str, &str)]) {
    let out = w
        .command(&w.moto.endpoint())
        .args(args)
        .arg("--dry-run")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: sealpipe {args:?} --dry-run failed:\n{stderr}"
    );
}

/// `args` with the deployment's report directory moved under the test's.
fn with_reports_in(args: &[String], dir: &Path) -> Vec<String> {
    args.iter()
        .map(|a| a.replace("/reports", &dir.display().to_string()))
        .collect()
}

fn world_with_buckets() -> World {
    let w = World::start("deploy");
    for bucket in ["acme-raw", "acme-sealed"] {
        w.create_bucket(bucket);
    }
    std::fs::create_dir_all(w.path("reports")).unwrap();
    w
}

#[test]
fn the_container_runs_sealpipe_itself() {
    assert_eq!(entrypoint(), ["/usr/local/bin/sealpipe"]);
}

#[test]
fn kubernetes_manifests_are_indexed_jobs_whose_arguments_run() {
    let w = world_with_buckets();
    let reports = w.path("reports");

    // The one-off Indexed Job.
    let docs = yaml_documents(&deploy("kubernetes/indexed-job.yaml"));
    assert_eq!(docs.len(), 1);
    let job = &docs[0];
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert!(job["metadata"]["name"].is_string());
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    let pod = &spec["template"]["spec"];
    assert!(["Never", "OnFailure"].contains(&pod["restartPolicy"].as_str().unwrap()));
    let container = &pod["containers"][0];
    assert!(container["image"].is_string());
    assert!(
        container["command"].is_null(),
        "the entrypoint is the image's"
    );
    let args = strings(&container["args"]);
    assert!(SUBCOMMANDS.contains(&args[0].as_str()), "{args:?}");
    let shards = args
        .iter()
        .position(|a| a == "--shards")
        .map(|i| args[i + 1].parse::<u64>().unwrap());
    assert_eq!(
        shards,
        Some(completions),
        "--shards is the Job's completions"
    );
    // Every pod's arguments run, with its index as Kubernetes expands it.
    for index in 0..completions {
        let i = index.to_string();
        let expanded: Vec<String> = with_reports_in(&args, &reports)
            .iter()
            .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", &i))
            .collect();
        dry_run(
            &w,
            "indexed-job.yaml",
            &expanded,
            &[("JOB_COMPLETION_INDEX", &i)],
        );
    }

    // The nightly CronJob and its config.
    let docs = yaml_documents(&deploy("kubernetes/cronjob.yaml"));
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let cron = docs.iter().find(|d| d["kind"] == "CronJob").unwrap();
    assert_eq!(cron["apiVersion"], "batch/v1");
    let schedule = cron["spec"]["schedule"].as_str().unwrap();
    assert_eq!(schedule.split_whitespace().count(), 5, "{schedule}");
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    let completions = job["completions"].as_u64().unwrap();
    let container = &job["template"]["spec"]["containers"][0];
    assert!(container["command"].is_null());
    let args = strings(&container["args"]);
    assert_eq!(args[..2], ["run", "--config"]);
    // The config the ConfigMap mounts where the arguments look for it.
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let (dir, file) = args[2].rsplit_once('/').unwrap();
    assert_eq!(dir, mount);
    let toml = config_map["data"][file].as_str().unwrap();
    let config: toml::Table = toml::from_str(toml).unwrap();
    assert_eq!(
        config["job"]["shards"].as_integer(),
        Some(completions as i64),
        "[job] shards is the Job's completions"
    );
    let local = w.path(file);
    std::fs::write(
        &local,
        toml.replace("/reports", &reports.display().to_string()),
    )
    .unwrap();
    for index in 0..completions {
        let i = index.to_string();
        let run = vec!["run".into(), "--config".into(), local.display().to_string()];
        dry_run(&w, "cronjob.yaml", &run, &[("JOB_COMPLETION_INDEX", &i)]);
    }
}

#[test]
fn the_aws_batch_array_job_runs_every_child() {
    let w = world_with_buckets();
    let definition = json_file(&deploy("aws-batch/job-definition.json"));
    let submit = json_file(&deploy("aws-batch/submit-job.json"));
    assert_eq!(definition["type"], "container");
    assert_eq!(submit["jobDefinition"], definition["jobDefinitionName"]);
    assert!(submit["jobQueue"].is_string() && submit["jobName"].is_string());
    let size = submit["arrayProperties"]["size"].as_u64().unwrap();
    assert!(
        (2..=10_000).contains(&size),
        "array jobs have 2 to 10,000 children"
    );
    let container = &definition["containerProperties"];
    assert!(container["image"].is_string());
    assert!(
        container["jobRoleArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::")
    );
    // Batch's `command` is the image's CMD: sealpipe's arguments.
    let command = strings(&container["command"]);
    assert!(SUBCOMMANDS.contains(&command[0].as_str()), "{command:?}");
    for exit in definition["retryStrategy"]["evaluateOnExit"]
        .as_array()
        .unwrap()
    {
        let code = exit["onExitCode"].as_str().unwrap();
        let want = if code == "2" { "EXIT" } else { "RETRY" };
        assert_eq!(exit["action"], want, "exit {code}");
    }
    let size_text = size.to_string();
    for index in [0, size / 2, size - 1] {
        let i = index.to_string();
        dry_run(
            &w,
            "job-definition.json",
            &command,
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", &i),
                ("AWS_BATCH_JOB_ARRAY_SIZE", &size_text),
            ],
        );
    }
}

#[test]
fn iam_and_key_policies_grant_what_each_mode_needs() {
    let action_ok = |a: &str| {
        a == "kms:*"
            || a.split_once(':').is_some_and(|(service, name)| {
                ["s3", "kms"].contains(&service)
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphabetic())
            })
    };
    let actions_of = |policy: &Value| -> Vec<String> {
        assert_eq!(policy["Version"], "2012-10-17");
        let statements = policy["Statement"].as_array().unwrap();
        assert!(!statements.is_empty());
        let mut all = Vec::new();
        for s in statements {
            assert!(
                ["Allow", "Deny"].contains(&s["Effect"].as_str().unwrap()),
                "{s}"
            );
            assert!(!s["Resource"].is_null(), "{s}");
            let actions = match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                list => strings(list),
            };
            for a in &actions {
                assert!(action_ok(a), "{a}");
            }
            all.extend(actions);
        }
        all
    };
    let needs: [(&str, &[&str]); 3] = [
        (
            "encrypt-s3-to-s3.json",
            &[
                "s3:ListBucket",
                "s3:GetObject",
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "kms:GenerateDataKey",
            ],
        ),
        (
            "decrypt-s3-to-s3.json",
            &[
                "s3:ListBucket",
                "s3:GetObject",
                "s3:PutObject",
                "kms:Decrypt",
            ],
        ),
        (
            "rewrap-in-place.json",
            &[
                "s3:ListBucket",
                "s3:GetObject",
                "s3:PutObject",
                "kms:Decrypt",
                "kms:Encrypt",
            ],
        ),
    ];
    for (file, needed) in needs {
        let actions = actions_of(&json_file(&deploy(&format!("iam/{file}"))));
        for n in needed {
            assert!(actions.iter().any(|a| a == n), "{file} lacks {n}");
        }
        assert!(
            !actions.iter().any(|a| a.ends_with(":*")),
            "{file}: an IAM policy for a job grants no wildcard actions"
        );
    }
    let key_policy = json_file(&deploy("iam/kms-key-policy.json"));
    actions_of(&key_policy);
    for s in key_policy["Statement"].as_array().unwrap() {
        assert!(s["Principal"]["AWS"].is_string(), "{s}");
    }
}

#[test]
fn the_batch_operations_function_and_job_are_what_the_services_take() {
    let template_path = deploy("batch-operations/template.yaml");
    // cfn-lint (AWS's CloudFormation linter, in the test venv) checks every resource
    // against the CloudFormation resource specification.
    let lint = std::process::Command::new(common::venv_tool("cfn-lint"))
        .arg(&template_path)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let [template] = yaml_documents(&template_path).try_into().unwrap();
    let resources = &template["Resources"];
    let function = &resources["Function"]["Properties"];
    assert_eq!(resources["Function"]["Type"], "AWS::Lambda::Function");
    assert_eq!(function["PackageType"], "Image");
    assert!(function["Timeout"].as_u64().unwrap() <= 900);
    let command = strings(&function["ImageConfig"]["Command"]);
    assert!(SUBCOMMANDS.contains(&command[0].as_str()), "{command:?}");
    assert!(
        command.iter().any(|a| a == "--batch-operations"),
        "{command:?}"
    );
    let role = &resources["BatchOperationsRole"]["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "batchoperations.s3.amazonaws.com"
    );
    let grants = role["Policies"][0]["PolicyDocument"]["Statement"].to_string();
    assert!(grants.contains("lambda:InvokeFunction"), "{grants}");

    let job = json_file(&deploy("batch-operations/create-job.json"));
    let invoke = &job["Operation"]["LambdaInvoke"];
    assert_eq!(invoke["InvocationSchemaVersion"], "2.0");
    assert!(
        invoke["FunctionArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:lambda:")
    );
    assert_eq!(
        job["Manifest"]["Spec"]["Format"],
        "S3BatchOperations_CSV_20180820"
    );
    assert_eq!(
        strings(&job["Manifest"]["Spec"]["Fields"]),
        ["Bucket", "Key"]
    );
    assert_eq!(job["Report"]["Format"], "Report_CSV_20180820");
    assert!(
        job["RoleArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::")
    );

    // The function's arguments get through every check of the command line; outside
    // Lambda it then stops, saying what the Runtime API needs (it cannot dry-run: a
    // Batch Operations function would answer tasks it never did).
    let w = world_with_buckets();
    let out = w
        .command(&w.moto.endpoint())
        .args(&command)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"),
        "{stderr}"
    );
}

/// The statements of the first inline policy of an IAM role resource.
fn role_statements(role: &Value) -> Vec<Value> {
    let policies = role["Properties"]["Policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{policies:?}");
    let doc = &policies[0]["PolicyDocument"];
    assert_eq!(doc["Version"], "2012-10-17");
    doc["Statement"].as_array().unwrap().clone()
}

#[test]
fn the_serve_function_and_http_api_are_what_the_services_take() {
    let template_path = deploy("serve/template.yaml");
    let lint = std::process::Command::new(common::venv_tool("cfn-lint"))
        .arg(&template_path)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let [template] = yaml_documents(&template_path).try_into().unwrap();
    let resources = &template["Resources"];
    let of_type = |ty: &str| -> Vec<(String, Value)> {
        resources
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == ty)
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect()
    };
    let only = |ty: &str| -> (String, Value) {
        let mut found = of_type(ty);
        assert_eq!(found.len(), 1, "one {ty}: {found:?}");
        found.pop().unwrap()
    };
    let reference = |name: &str| json!({"Ref": name});
    let get_att = |name: &str, attribute: &str| json!({"Fn::GetAtt": [name, attribute]});

    // The function: the image, its command, a timeout within the gateway's.
    let (function_name, function) = only("AWS::Lambda::Function");
    let props = &function["Properties"];
    assert_eq!(props["PackageType"], "Image");
    assert!(props["Code"]["ImageUri"].is_object() || props["Code"]["ImageUri"].is_string());
    let command = props["ImageConfig"]["Command"].as_array().unwrap().clone();
    assert_eq!(command[0], "serve", "{command:?}");
    assert!(command.contains(&json!("--lambda")), "{command:?}");
    let value_of = |flag: &str| -> Value {
        let at = command
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {command:?}"));
        command[at + 1].clone()
    };
    let (secret_name, secret) = only("AWS::SecretsManager::Secret");
    assert_eq!(value_of("--key"), reference("KeyArn"));
    assert_eq!(value_of("--token-secret"), reference(&secret_name));
    assert_eq!(value_of("--log-format"), "json");
    assert!(
        template["Parameters"]["KeyArn"]["Default"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:kms:")
    );
    // The generated secret is a valid one-line token file: one token of at least 16
    // visible characters, no spaces (nor punctuation that a shell would mangle).
    let generate = &secret["Properties"]["GenerateSecretString"];
    assert!(
        generate["PasswordLength"].as_u64().unwrap() >= 16,
        "{generate}"
    );
    assert_eq!(generate["ExcludePunctuation"], true, "{generate}");
    assert_eq!(generate["IncludeSpace"], false, "{generate}");
    assert!(
        generate["SecretStringTemplate"].is_null(),
        "a JSON secret is not a token file: {generate}"
    );

    // The role: Lambda's, with the key's three actions and the secret's read, nothing
    // more, on those two resources only.
    let role_name = props["Role"]["Fn::GetAtt"][0].as_str().unwrap().to_string();
    let role = &resources[&role_name];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    assert_eq!(
        role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "lambda.amazonaws.com"
    );
    let mut granted: Vec<(String, Value)> = Vec::new();
    for s in role_statements(role) {
        assert_eq!(s["Effect"], "Allow", "{s}");
        let actions = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            list => strings(list),
        };
        assert_ne!(s["Resource"], "*", "{s}");
        for a in actions {
            assert!(!a.contains('*'), "no wildcard actions: {s}");
            granted.push((a, s["Resource"].clone()));
        }
    }
    granted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        granted,
        [
            ("kms:Decrypt".to_string(), reference("KeyArn")),
            ("kms:Encrypt".to_string(), reference("KeyArn")),
            ("kms:GenerateDataKey".to_string(), reference("KeyArn")),
            (
                "secretsmanager:GetSecretValue".to_string(),
                reference(&secret_name)
            ),
        ]
    );

    // The HTTP API: one proxy integration of payload format 2.0, every route to it,
    // a deployed stage, and the permission for API Gateway to invoke the function.
    let (api_name, api) = only("AWS::ApiGatewayV2::Api");
    assert_eq!(api["Properties"]["ProtocolType"], "HTTP");
    let (integration_name, integration) = only("AWS::ApiGatewayV2::Integration");
    let integration = &integration["Properties"];
    assert_eq!(integration["ApiId"], reference(&api_name));
    assert_eq!(integration["IntegrationType"], "AWS_PROXY");
    assert_eq!(integration["PayloadFormatVersion"], "2.0");
    assert_eq!(
        integration["IntegrationUri"],
        get_att(&function_name, "Arn")
    );
    let gateway_ms = integration["TimeoutInMillis"].as_u64().unwrap_or(30_000);
    assert!(gateway_ms <= 30_000, "an HTTP API waits at most 30 s");
    assert!(
        props["Timeout"].as_u64().unwrap() * 1000 <= gateway_ms,
        "the function outlives the gateway's wait: its answers would be lost"
    );
    let (_, route) = only("AWS::ApiGatewayV2::Route");
    assert_eq!(route["Properties"]["ApiId"], reference(&api_name));
    assert_eq!(route["Properties"]["RouteKey"], "$default");
    assert_eq!(
        route["Properties"]["Target"],
        json!({"Fn::Sub": format!("integrations/${{{integration_name}}}")})
    );
    let (_, stage) = only("AWS::ApiGatewayV2::Stage");
    assert_eq!(stage["Properties"]["ApiId"], reference(&api_name));
    assert_eq!(stage["Properties"]["StageName"], "$default");
    assert_eq!(stage["Properties"]["AutoDeploy"], true);
    let (_, permission) = only("AWS::Lambda::Permission");
    let permission = &permission["Properties"];
    assert_eq!(permission["Action"], "lambda:InvokeFunction");
    assert_eq!(permission["Principal"], "apigateway.amazonaws.com");
    assert_eq!(permission["FunctionName"], reference(&function_name));
    assert!(
        permission["SourceArn"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .contains(&format!("${{{api_name}}}")),
        "{permission}"
    );
    assert_eq!(
        template["Outputs"]["ApiUrl"]["Value"],
        get_att(&api_name, "ApiEndpoint")
    );

    // The command line gets through every check, the key and the secret resolved to
    // moto's; outside Lambda it then stops, saying what the Runtime API needs.
    // (tests/serve_lambda.rs runs the same command under a Runtime API emulator.)
    let w = World::start("deploy-serve");
    let key = w.create_kms_key();
    let secret_arn = w.create_secret("sealpipe-serve-tokens", &"T".repeat(48));
    let args: Vec<String> = command
        .iter()
        .map(|a| match a {
            Value::String(s) => s.clone(),
            other if *other == reference("KeyArn") => key.clone(),
            other if *other == reference(&secret_name) => secret_arn.clone(),
            other => panic!("an argument the test cannot resolve: {other}"),
        })
        .collect();
    let out = w.command(&w.moto.endpoint()).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"),
        "{stderr}"
    );
}

/// HTTPS requests to `base` trusting only `ca`: `(method, path, token, body)` each;
/// prints `[status, body]` per request.
const HTTPS_CLIENT: &str = r#"
import json, ssl, sys, urllib.error, urllib.request
base, ca = sys.argv[1:3]
context = ssl.create_default_context(cafile=ca)
out = []
for method, path, token, body in json.load(sys.stdin):
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=body.encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as r:
            out.append([r.status, r.read().decode("latin-1")])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode("latin-1")])
print(json.dumps(out))
"#;

#[test]
fn the_serve_deployment_answers_its_probe_over_https_with_its_mounted_tokens() {
    let docs = yaml_documents(&deploy("serve/kubernetes.yaml"));
    let find = |kind: &str| -> &Value {
        let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]
    };
    let deployment = find("Deployment");
    let service = find("Service");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(service["apiVersion"], "v1");
    let spec = &deployment["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    let selector = spec["selector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "the selector matches the pods' labels");
    }
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the pods");
    }
    let pod = &spec["template"]["spec"];
    if let Some(account) = pod["serviceAccountName"].as_str() {
        assert!(
            docs.iter()
                .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == account),
            "the ServiceAccount {account} is in the file"
        );
    }
    let container = &pod["containers"][0];
    assert!(container["image"].is_string());
    assert!(
        container["command"].is_null(),
        "the entrypoint is the image's"
    );
    let args = strings(&container["args"]);
    assert_eq!(args[0], "serve", "{args:?}");
    let value_of = |flag: &str| -> String {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[at + 1].clone()
    };
    assert!(!args.contains(&"--insecure-listen".to_string()), "{args:?}");

    // The port: --listen, the container's port, the probes' and the Service's target.
    let listen = value_of("--listen");
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    let ports = container["ports"].as_array().unwrap();
    let declared = ports
        .iter()
        .find(|p| p["containerPort"] == port)
        .unwrap_or_else(|| panic!("the container declares port {port}: {ports:?}"));
    let is_the_port = |p: &Value| *p == port || (p.is_string() && *p == declared["name"]);
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        if probe == "livenessProbe" && get.is_null() {
            continue;
        }
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert!(is_the_port(&get["port"]), "{probe}: {get}");
        assert_eq!(get["scheme"], "HTTPS", "{probe}: the server speaks TLS");
    }
    let service_port = &service["spec"]["ports"][0];
    assert!(is_the_port(&service_port["targetPort"]), "{service_port}");

    // Every file it reads is in a mounted volume: mount path + the item's path.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let provided = |file: &str| -> bool {
        mounts.iter().any(|m| {
            let Some(rel) = file.strip_prefix(&format!("{}/", m["mountPath"].as_str().unwrap()))
            else {
                return false;
            };
            let volume = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
            let sources: Vec<&Value> = match volume["projected"]["sources"].as_array() {
                Some(s) => s.iter().map(|s| &s["secret"]).collect(),
                None => vec![&volume["secret"]],
            };
            sources.iter().any(|s| {
                s["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i["path"] == rel))
            })
        })
    };
    let files = ["--tls-cert", "--tls-key", "--token-file"].map(|f| (f, value_of(f)));
    for (flag, file) in &files {
        assert!(provided(file), "{flag} {file} is in no mounted Secret");
    }
    assert_eq!(value_of("--token-file"), "/etc/sealpipe/tokens");

    // The arguments run: files under the test's directory, a loopback port, moto's
    // key; the probe's request answers 200 over HTTPS, and a token from the file works.
    let w = World::start("deploy-serve-k8s");
    let kms_key = w.create_kms_key();
    let root = w.path("etc-sealpipe");
    std::fs::create_dir_all(root.join("tls")).unwrap();
    let (cert, _) = common::self_signed_certificate(&root.join("tls"));
    let token = "k8s-token-0a1b2c3d4e5f6a7b8c9d";
    std::fs::write(
        root.join("tokens"),
        format!("# mounted from the sealpipe-serve-tokens Secret\n{token}\n"),
    )
    .unwrap();
    let run_args: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == listen {
                "127.0.0.1:0".to_string()
            } else if a.starts_with("arn:aws:kms:") {
                kms_key.clone()
            } else {
                a.replace("/etc/sealpipe", &root.display().to_string())
            }
        })
        .collect();
    let mut env: Vec<(String, String)> = container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        v["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Spills go to the pod's emptyDir; here, to the test's directory.
    for (name, value) in &mut env {
        if name == "TMPDIR" {
            *value = w.path("tmp").display().to_string();
            std::fs::create_dir_all(value.as_str()).unwrap();
        }
    }
    let stderr_path = w.path("serve.stderr");
    let mut child = w
        .command(&w.moto.endpoint())
        .args(&run_args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let base = loop {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if let Some(url) = log
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("sealpipe serve: listening on "))
            .filter(|_| log.contains('\n'))
        {
            break url.trim().to_string();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sealpipe {run_args:?} exited ({status}):\n{log}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "sealpipe serve did not say where it listens within 30 s:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let requests = json!([
        ["GET", "/healthz", null, null],
        ["POST", "/v1/encrypt", token, "from the pod"],
        ["POST", "/v1/encrypt", null, "no token"],
    ]);
    let printed = common::venv_python(
        "HTTPS requests to the server",
        HTTPS_CLIENT,
        &[Path::new(&base), &cert],
        requests.to_string().as_bytes(),
    );
    let answers: Vec<(u16, String)> = serde_json::from_str(&printed).unwrap();
    common::faults::sigterm(&child);
    let status = common::wait_or_kill(&mut child, std::time::Duration::from_secs(30));
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(answers[0].0, 200, "{answers:?}\n{log}");
    let health: Value = serde_json::from_str(&answers[0].1).unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    assert_eq!(answers[1].0, 200, "{answers:?}\n{log}");
    assert!(answers[1].1.as_bytes().starts_with(&[0x02, 0x04, 0x78]));
    assert_eq!(answers[2].0, 401, "{answers:?}");
    let status = status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{log}"));
    // SIGTERM is how a server is stopped (the kubelet deleting a pod): a success.
    assert!(
        status.success(),
        "SIGTERM is a graceful stop: {status}\n{log}"
    );
    assert!(log.contains("requests in progress finish"), "{log}");
}

#[test]
fn the_serve_deployments_reuse_the_one_image() {
    // Both deploy/serve routes run the image of deploy/container/Containerfile, whose
    // entrypoint is the binary: their arguments start with the subcommand.
    assert_eq!(entrypoint(), ["/usr/local/bin/sealpipe"]);
    let [template] = yaml_documents(&deploy("serve/template.yaml"))
        .try_into()
        .unwrap();
    let function = &template["Resources"]["Function"]["Properties"];
    assert_eq!(function["ImageConfig"]["Command"][0], "serve");
    assert!(function["ImageConfig"]["EntryPoint"].is_null());
    assert!(
        template["Parameters"]["ImageUri"]["Description"]
            .as_str()
            .unwrap()
            .contains("deploy/container/Containerfile")
    );
    let docs = yaml_documents(&deploy("serve/kubernetes.yaml"));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "serve");
    assert!(container["command"].is_null());
}
