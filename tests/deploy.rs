//! `deploy/`: every manifest parses (YAML with PyYAML, JSON with serde_json), has the
//! fields its engine requires, agrees with the container's entrypoint, and its
//! sealpipe arguments (or config) run: each is given to the real binary as the engine
//! would (Kubernetes' `$(JOB_COMPLETION_INDEX)` expanded, AWS Batch's array variables
//! set) with `--dry-run`, against moto buckets of the names it uses.

mod common;

use std::path::{Path, PathBuf};

use common::world::World;
use serde_json::Value;

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
