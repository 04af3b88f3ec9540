//! FakeActions held to GitHub's own scale set client: every route of
//! `fixtures/actions-scaleset/scaleset.json` answers with the status that
//! client checks for and with exactly the JSON fields its types carry.

use std::collections::BTreeSet;
use std::time::Duration;

use hangar_testkit::fake_actions::FakeActions;
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const FIXTURE: &str = include_str!("../../../fixtures/actions-scaleset/scaleset.json");

struct Fx(Value);

impl Fx {
    fn load() -> Self {
        Fx(serde_json::from_str(FIXTURE).expect("fixture parses"))
    }

    fn shape(&self, name: &str) -> BTreeSet<String> {
        self.0["shapes"][name]
            .as_array()
            .unwrap_or_else(|| panic!("no shape {name}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    fn route(&self, name: &str) -> &Value {
        self.0["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name}"))
    }

    /// The route's method and first path, with `{…}` filled from `args`
    /// in order.
    fn call(&self, name: &str, args: &[&str]) -> (reqwest::Method, String) {
        let r = self.route(name);
        let mut path = r["paths"][0].as_str().unwrap().to_owned();
        for a in args {
            let open = path.find('{').expect("a placeholder left");
            let close = path[open..].find('}').unwrap() + open;
            path.replace_range(open..=close, a);
        }
        (r["method"].as_str().unwrap().parse().unwrap(), path)
    }

    fn status(&self, name: &str) -> u16 {
        self.route(name)["status"].as_u64().unwrap() as u16
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn check(fx: &Fx, shape: &str, v: &Value) {
    assert_eq!(keys(v), fx.shape(shape), "{shape}: {v}");
    match shape {
        "RunnerScaleSet" => {
            for l in v["labels"].as_array().unwrap() {
                check(fx, "Label", l);
            }
            check(fx, "RunnerSetting", &v["RunnerSetting"]);
            check(fx, "RunnerScaleSetStatistic", &v["statistics"]);
        }
        "RunnerScaleSetSession" => {
            check(fx, "RunnerScaleSet", &v["runnerScaleSet"]);
            check(fx, "RunnerScaleSetStatistic", &v["statistics"]);
        }
        "RunnerScaleSetJitRunnerConfig" => check(fx, "RunnerReference", &v["runner"]),
        "runnerScaleSetMessageResponse" => {
            assert_eq!(v["messageType"], fx.0["message_type"]);
            check(fx, "RunnerScaleSetStatistic", &v["statistics"]);
            let body: Vec<Value> =
                serde_json::from_str(v["body"].as_str().expect("body is a string")).unwrap();
            for m in &body {
                let kind = m["messageType"].as_str().unwrap();
                assert!(
                    fx.0["job_message_types"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(kind)),
                    "{kind}"
                );
                let mut want = fx.shape("JobMessageBase");
                want.extend(fx.shape(kind));
                assert_eq!(keys(m), want, "{kind}: {m}");
            }
        }
        _ => {}
    }
}

/// A list answer (`count`, `value`) whose items have `item` shape.
fn check_list(fx: &Fx, list: &str, item: &str, v: &Value) -> Vec<Value> {
    check(fx, list, v);
    let items = v["value"].as_array().unwrap().clone();
    assert_eq!(v["count"].as_u64().unwrap() as usize, items.len());
    for i in &items {
        check(fx, item, i);
    }
    items
}

struct Svc {
    http: reqwest::Client,
    base: String,
    admin: String,
    api_version: String,
}

impl Svc {
    async fn send(
        &self,
        (method, path): (reqwest::Method, String),
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{path}{sep}api-version={}",
            self.base.trim_end_matches('/').to_owned() + "/",
            self.api_version
        )
        .replace("//_apis", "/_apis");
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn fake_actions_holds_to_the_scaleset_client() {
    let fx = Fx::load();
    let gh = FakeGitHub::start().await;
    let fa = FakeActions::start(&gh).await;
    fa.set_poll_wait(Duration::from_millis(200));
    fa.set_job_duration(Duration::from_millis(500));
    let http = reqwest::Client::new();

    // The registration token, and the exchange.
    let (m, path) = fx.call("registration-token", &["octo", "app"]);
    let resp = http
        .request(m, format!("{}{path}", gh.url()))
        .bearer_auth("ghp_x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), fx.status("registration-token"));
    let reg: Value = resp.json().await.unwrap();
    check(&fx, "registrationToken", &reg);
    let (m, path) = fx.call("runner-registration", &[]);
    let body = json!({"url": "https://github.com/octo/app", "runner_event": "register"});
    assert_eq!(keys(&body), fx.shape("runnerRegistrationRequest"));
    let resp = http
        .request(m, format!("{}{path}", gh.url()))
        .header(
            "authorization",
            format!(
                "{} {}",
                fx.0["headers"]["exchange_authorization_scheme"]
                    .as_str()
                    .unwrap(),
                reg["token"].as_str().unwrap()
            ),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let admin: Value = resp.json().await.unwrap();
    check(&fx, "actionsServiceAdminConnection", &admin);
    // A token of another entity is refused.
    let other = http
        .post(format!("{}{path}", gh.url()))
        .header(
            "authorization",
            format!("RemoteAuth {}", reg["token"].as_str().unwrap()),
        )
        .json(&json!({"url": "https://github.com/someone/else", "runner_event": "register"}))
        .send()
        .await
        .unwrap();
    assert!(!other.status().is_success());

    let svc = Svc {
        http: http.clone(),
        base: admin["url"].as_str().unwrap().to_owned(),
        admin: admin["token"].as_str().unwrap().to_owned(),
        api_version: fx.0["api_version"].as_str().unwrap().to_owned(),
    };
    let a = svc.admin.clone();

    // Runner groups.
    let (m, p) = fx.call("get-runner-group-by-name", &[]);
    let (st, v) = svc
        .send((m, format!("{p}?groupName=Default")), &a, None)
        .await;
    assert_eq!(st, fx.status("get-runner-group-by-name"));
    let groups = check_list(&fx, "RunnerGroupList", "RunnerGroup", &v);
    assert_eq!(groups[0]["id"], 1);

    // Scale set CRUD.
    let create = json!({"name": "ss", "runnerGroupId": 1, "labels": [{"type": "System", "name": "ss"}],
        "RunnerSetting": {"disableUpdate": false}});
    let (st, ss) = svc
        .send(fx.call("create-runner-scale-set", &[]), &a, Some(create))
        .await;
    assert_eq!(st, fx.status("create-runner-scale-set"));
    check(&fx, "RunnerScaleSet", &ss);
    let id = ss["id"].to_string();
    let (m, p) = fx.call("get-runner-scale-set-by-name", &[]);
    let (st, v) = svc
        .send((m, format!("{p}?runnerGroupId=1&name=ss")), &a, None)
        .await;
    assert_eq!(st, fx.status("get-runner-scale-set-by-name"));
    assert_eq!(
        check_list(&fx, "runnerScaleSetsResponse", "RunnerScaleSet", &v).len(),
        1
    );
    let (st, v) = svc
        .send(fx.call("get-runner-scale-set", &[&id]), &a, None)
        .await;
    assert_eq!(st, fx.status("get-runner-scale-set"));
    check(&fx, "RunnerScaleSet", &v);
    let (st, v) = svc
        .send(
            fx.call("update-runner-scale-set", &[&id]),
            &a,
            Some(json!({"RunnerSetting": {"disableUpdate": true}})),
        )
        .await;
    assert_eq!(st, fx.status("update-runner-scale-set"));
    check(&fx, "RunnerScaleSet", &v);
    assert_eq!(v["RunnerSetting"]["disableUpdate"], true);

    // Sessions.
    let sreq = json!({"ownerName": "hangar"});
    assert_eq!(keys(&sreq), fx.shape("RunnerScaleSetSessionRequest"));
    let (st, sess) = svc
        .send(
            fx.call("create-message-session", &[&id]),
            &a,
            Some(sreq.clone()),
        )
        .await;
    assert_eq!(st, fx.status("create-message-session"));
    check(&fx, "RunnerScaleSetSession", &sess);
    let (st, _) = svc
        .send(fx.call("create-message-session", &[&id]), &a, Some(sreq))
        .await;
    assert_eq!(st, 409, "a second session");
    let sid = sess["sessionId"].as_str().unwrap().to_owned();
    let (st, sess) = svc
        .send(fx.call("refresh-message-session", &[&id, &sid]), &a, None)
        .await;
    assert_eq!(st, fx.status("refresh-message-session"));
    check(&fx, "RunnerScaleSetSession", &sess);
    let queue_url = sess["messageQueueUrl"].as_str().unwrap().to_owned();
    let queue_token = sess["messageQueueAccessToken"].as_str().unwrap().to_owned();

    // The long poll: 202 when empty, then messages.
    let poll = |last: i64| {
        let mut u = url::Url::parse(&queue_url).unwrap();
        if last > 0 {
            u.query_pairs_mut()
                .append_pair("lastMessageId", &last.to_string());
        }
        http.get(u.as_str())
            .bearer_auth(&queue_token)
            .header("accept", fx.0["headers"]["poll_accept"].as_str().unwrap())
            .header(fx.0["headers"]["max_capacity"].as_str().unwrap(), "2")
    };
    let r = poll(0).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        fx.route("get-message")["empty_status"].as_u64().unwrap() as u16
    );
    let rid = fa.queue_job("ss", "octo/app");
    let r = poll(0).send().await.unwrap();
    assert_eq!(r.status().as_u16(), fx.status("get-message"));
    let m1: Value = r.json().await.unwrap();
    check(&fx, "runnerScaleSetMessageResponse", &m1);
    let m1_id = m1["messageId"].as_i64().unwrap();
    let delete_url = {
        let mut u = url::Url::parse(&queue_url).unwrap();
        let p = format!("{}/{m1_id}", u.path());
        u.set_path(&p);
        u
    };
    let r = http
        .delete(delete_url.as_str())
        .bearer_auth(&queue_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), fx.status("delete-message"));

    // Acquire (with the queue token), then the runner's JIT config.
    let (st, v) = svc
        .send(
            fx.call("acquire-jobs", &[&id]),
            &queue_token,
            Some(json!([rid])),
        )
        .await;
    assert_eq!(st, fx.status("acquire-jobs"));
    check(&fx, "acquireJobsResponse", &v);
    assert_eq!(v["value"], json!([rid]));
    let jit_req = json!({"name": "runner-1", "workFolder": "_work"});
    assert_eq!(keys(&jit_req), fx.shape("RunnerScaleSetJitRunnerSetting"));
    let (st, jit) = svc
        .send(
            fx.call("generate-jit-config", &[&id]),
            &a,
            Some(jit_req.clone()),
        )
        .await;
    assert_eq!(st, fx.status("generate-jit-config"));
    check(&fx, "RunnerScaleSetJitRunnerConfig", &jit);
    let (st, clash) = svc
        .send(fx.call("generate-jit-config", &[&id]), &a, Some(jit_req))
        .await;
    assert!(st >= 400);
    check(&fx, "actionsExceptionError", &clash);
    assert!(
        clash["typeName"]
            .as_str()
            .unwrap()
            .contains("AgentExistsException")
    );
    let runner_id = jit["runner"]["id"].to_string();
    let (m, p) = fx.call("get-runner-by-name", &[]);
    let (st, v) = svc
        .send((m, format!("{p}?agentName=runner-1")), &a, None)
        .await;
    assert_eq!(st, fx.status("get-runner-by-name"));
    assert_eq!(
        check_list(&fx, "RunnerReferenceList", "RunnerReference", &v).len(),
        1
    );
    let (st, v) = svc
        .send(fx.call("get-runner", &[&runner_id]), &a, None)
        .await;
    assert_eq!(st, fx.status("get-runner"));
    check(&fx, "RunnerReference", &v);

    // The runner comes online and runs the job: every job message type
    // arrives, each in its exact shape.
    assert!(fa.runner_online(jit["runner"]["id"].as_i64().unwrap()));
    let (st, busy) = svc
        .send(fx.call("remove-runner", &[&runner_id]), &a, None)
        .await;
    assert!(st >= 400, "a busy runner is not removed");
    check(&fx, "actionsExceptionError", &busy);
    assert!(
        busy["typeName"]
            .as_str()
            .unwrap()
            .contains("JobStillRunningException")
    );
    let mut kinds = BTreeSet::new();
    let mut last = m1_id;
    while kinds.len() < 3 {
        let r = poll(last).send().await.unwrap();
        if r.status().as_u16() == 202 {
            continue;
        }
        let m: Value = r.json().await.unwrap();
        check(&fx, "runnerScaleSetMessageResponse", &m);
        last = m["messageId"].as_i64().unwrap();
        for j in serde_json::from_str::<Vec<Value>>(m["body"].as_str().unwrap()).unwrap() {
            kinds.insert(j["messageType"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        kinds,
        ["JobAssigned", "JobCompleted", "JobStarted"]
            .map(String::from)
            .into()
    );
    let (st, gone) = svc
        .send(fx.call("get-runner", &[&runner_id]), &a, None)
        .await;
    assert_eq!(st, 404);
    check(&fx, "actionsExceptionError", &gone);
    assert!(
        gone["typeName"]
            .as_str()
            .unwrap()
            .contains("AgentNotFoundException")
    );

    // An idle runner is removed with 204.
    let (_, jit2) = svc
        .send(
            fx.call("generate-jit-config", &[&id]),
            &a,
            Some(json!({"name": "runner-2", "workFolder": "_work"})),
        )
        .await;
    let (st, _) = svc
        .send(
            fx.call("remove-runner", &[&jit2["runner"]["id"].to_string()]),
            &a,
            None,
        )
        .await;
    assert_eq!(st, fx.status("remove-runner"));

    // An expired queue token: 401 on the queue and on acquirejobs.
    fa.expire_queue_tokens();
    let r = poll(last).send().await.unwrap();
    let expired = fx.route("get-message")["expired_status"].as_u64().unwrap() as u16;
    assert_eq!(r.status().as_u16(), expired);
    let r = http
        .delete(delete_url.as_str())
        .bearer_auth(&queue_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), expired);
    let (st, _) = svc
        .send(
            fx.call("acquire-jobs", &[&id]),
            &queue_token,
            Some(json!([rid])),
        )
        .await;
    assert_eq!(
        st,
        fx.route("acquire-jobs")["expired_status"].as_u64().unwrap() as u16
    );

    // Closing up.
    let (st, _) = svc
        .send(fx.call("delete-message-session", &[&id, &sid]), &a, None)
        .await;
    assert_eq!(st, fx.status("delete-message-session"));
    let (st, _) = svc
        .send(fx.call("delete-runner-scale-set", &[&id]), &a, None)
        .await;
    assert_eq!(st, fx.status("delete-runner-scale-set"));
    let (st, v) = svc
        .send(fx.call("get-runner-scale-set", &[&id]), &a, None)
        .await;
    assert_eq!(st, 404);
    check(&fx, "actionsExceptionError", &v);
    // An expired admin token is refused.
    fa.expire_admin_tokens();
    let (m, p) = fx.call("get-runner-group-by-name", &[]);
    let (st, _) = svc
        .send((m, format!("{p}?groupName=Default")), &a, None)
        .await;
    assert_eq!(st, 401);
}
