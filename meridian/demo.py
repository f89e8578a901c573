"""`meridian demo`: files multilingual tickets through the API and shows them progress."""

from __future__ import annotations

import asyncio
import uuid

import httpx

DEMO_TICKETS = [
    (
        "acme",
        "Production API returns 500 for all users",
        "Since 09:00 every call to /v2/orders fails with error 500. Outage!",
    ),
    (
        "globex-es",
        "No puedo descargar la factura",
        "Hola, la factura de octubre no se descarga desde el portal. ¿Pueden ayudarme?",
    ),
    (
        "sakura",
        "動画の再生が止まる",
        "昨日から動画の再生が途中で止まります。再生できないユーザーが多いです。",
    ),
    (
        "hanbit",
        "로그인이 안 돼요",
        "어제부터 관리자 계정으로 로그인이 안 됩니다. 비밀번호 재설정도 실패해요.",
    ),
    ("dragon", "SDK crash on iOS 17 求助", "我们的 iOS 应用集成 SDK 后在 iOS 17 上崩溃, 请帮忙看看"),
    (
        "nordwind",
        "Datenbank-Backup schlägt fehl",
        "Das nächtliche Backup unserer Datenbank bricht mit einem Timeout ab.",
    ),
]


async def run_demo(base_url: str, admin_token: str) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        ids = []
        for customer, subject, body in DEMO_TICKETS:
            response = await http.post(
                "/v1/tickets",
                json={"customer_id": customer, "subject": subject, "body": body},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
            print(f"filed ticket {ids[-1]} for {customer}: {subject}")
        print("\nwaiting for triage and assignment ...")
        tickets = await _wait(http, ids, lambda t: t["status"] not in ("new",))
        _show(tickets)
        if any(t["status"] == "queued" for t in tickets):
            print(
                "queued tickets wait for a native speaker on shift (MERIDIAN_NATIVE_WAIT, 5 min),\n"
                "then a fluent one (MERIDIAN_FLUENT_WAIT, 10 min more), then any skilled agent with\n"
                "machine translation; agents within 15 minutes of their shift end take no new tickets."
            )

        first = tickets[0]
        if first["assignee_id"]:
            print(
                f"\n{first['assignee_id']} replies to ticket {first['id']} and resolves it; "
                "the customer rates it"
            )
            await _ok(
                http.post(
                    f"/v1/tickets/{first['id']}/replies",
                    json={
                        "agent_id": first["assignee_id"],
                        "body": "We rolled back the release; please retry.",
                    },
                )
            )
            await _ok(
                http.post(
                    f"/v1/tickets/{first['id']}/resolve", json={"resolution": "Rolled back release 2.3.1"}
                )
            )
            await _ok(
                http.post(
                    f"/v1/tickets/{first['id']}/csat", json={"score": 5, "comment": "Fast fix, thanks!"}
                )
            )
            timeline = (await _ok(http.get(f"/v1/tickets/{first['id']}/timeline"))).json()["events"]
            print("timeline:")
            for event in timeline:
                who = event["actor"].get("name") or event["actor"]["type"]
                print(f"  {event['seq']:>3} {event['at'][:19]} {event['kind']:<16} {who}")
        print(f"\nall tickets: {base_url}/v1/tickets  (API docs at {base_url}/docs)")


async def _ok(request) -> httpx.Response:
    response = await request
    if response.is_error:
        raise SystemExit(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )
    return response


async def _wait(http: httpx.AsyncClient, ids: list[int], ready, patience: float = 30) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        tickets = [(await _ok(http.get(f"/v1/tickets/{i}"))).json() for i in ids]
        if all(ready(t) for t in tickets) or asyncio.get_running_loop().time() > deadline:
            return tickets
        await asyncio.sleep(0.5)


def _show(tickets: list[dict]) -> None:
    print(
        f"{'id':>5}  {'status':<9} {'lang':<4} {'module':<15} {'prio':<4} {'region':<9} "
        "assignee  first-response due"
    )
    for t in tickets:
        due = (t["sla"].get("first_response") or {}).get("due_at") or "-"
        print(
            f"{t['id']:>5}  {t['status']:<9} {t['language'] or '-':<4} {t['module'] or '-':<15} "
            f"{t['priority'] or '-':<4} {t['region'] or '-':<9} {t['assignee_id'] or '-':<9} {due}"
        )
