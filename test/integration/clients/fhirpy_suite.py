"""fhirpy (a Python FHIR client written by others) drives a running gateway, unchanged.

Run by fhirpy.test.ts in a venv with fhirpy-requirements.txt. It reads the gateway from the environment:
FHIR_BASE_URL, FHIR_TOKEN, and the Synthea patient loaded before it runs (SYNTHEA_PATIENT_ID,
SYNTHEA_OBSERVATION_IDS, a JSON list). Each check runs on its own and prints one JSON line:
{"check": name, "ok": true} or {"check": name, "ok": false, "error": ..., "trace": ...}.
`--list` prints each check's name and description instead, one JSON line each.
"""

import json
import os
import sys
import traceback
import uuid

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def new_patient(client, family):
    """An unsaved Patient with an identifier no other check uses."""
    return client.resource(
        "Patient",
        identifier=[{"system": "urn:test:fhirpy", "value": str(uuid.uuid4())}],
        name=[{"family": family, "given": ["Py"]}],
    )


def identifier_param(patient):
    identifier = patient["identifier"][0]
    return f"{identifier['system']}|{identifier['value']}"


@check
def crud(client, env):
    """creates, reads, updates and deletes a Patient"""
    from fhirpy.base.exceptions import ResourceNotFound

    patient = new_patient(client, "Crud")
    patient.save()
    assert patient.id, "save() gave the new Patient an id"
    assert patient["meta"]["versionId"] == "1", patient["meta"]

    read = client.reference("Patient", patient.id).to_resource()
    assert read["name"] == [{"family": "Crud", "given": ["Py"]}], read["name"]
    assert client.get("Patient", patient.id)["id"] == patient.id

    patient["birthDate"] = "1970-01-02"
    patient.save()
    assert patient["meta"]["versionId"] == "2", patient["meta"]
    assert client.get("Patient", patient.id)["birthDate"] == "1970-01-02"

    patient.delete()
    try:
        client.get("Patient", patient.id)
    except ResourceNotFound:
        pass
    else:
        raise AssertionError("a deleted Patient is still readable")


@check
def search(client, env):
    """searches by identifier and by patient, with a search set it can iterate"""
    patient = new_patient(client, "Search")
    patient.save()
    found = client.resources("Patient").search(identifier=identifier_param(patient)).fetch()
    assert [p.id for p in found] == [patient.id], [p.id for p in found]

    first_page = client.resources("Observation").search(patient=env["patient"]).limit(10).fetch()
    assert len(first_page) == 10, len(first_page)
    assert {o.id for o in first_page} <= set(env["observations"])
    assert all(o["subject"]["reference"] == f"Patient/{env['patient']}" for o in first_page)
    assert client.resources("Patient").search(_id=env["patient"]).get().id == env["patient"]


@check
def fetch_all(client, env):
    """fetch_all() pages a real Synthea patient's Observations to exhaustion, each once"""
    observations = client.resources("Observation").search(patient=env["patient"]).limit(10).fetch_all()
    ids = [o.id for o in observations]
    assert len(ids) == len(set(ids)), "an Observation came back twice"
    assert sorted(ids) == sorted(env["observations"]), f"{len(ids)} of {len(env['observations'])}"


@check
def count(client, env):
    """count() gives the number of matches"""
    assert client.resources("Observation").search(patient=env["patient"]).count() == len(env["observations"])
    patient = new_patient(client, "Count")
    assert client.resources("Patient").search(identifier=identifier_param(patient)).count() == 0
    patient.save()
    stored = client.resources("Patient").search(identifier=identifier_param(patient)).fetch()
    assert [p.id for p in stored] == [patient.id], "save() stored the Patient once"
    assert client.resources("Patient").search(identifier=identifier_param(patient)).count() == 1


@check
def elements(client, env):
    """.elements() returns only the elements asked for (fhirpy adds id and resourceType to _elements)"""
    [patient] = client.resources("Patient").search(_id=env["patient"]).elements("name", "gender").fetch()
    assert patient.id == env["patient"]
    assert patient["name"] and patient["gender"], "the elements asked for are there"
    extra = set(patient.keys()) - {"resourceType", "id", "meta", "name", "gender"}
    assert not extra, f"elements not asked for: {sorted(extra)}"


@check
def get_or_create(client, env):
    """get_or_create() twice makes one Patient: it creates first, then finds it"""
    patient = new_patient(client, "Once")
    search = client.resources("Patient").search(identifier=identifier_param(patient))
    first, created = search.get_or_create(patient)
    assert created, "the first call creates"
    twin = client.resource("Patient", identifier=patient["identifier"], name=patient["name"])
    again, created_again = search.get_or_create(twin)
    assert not created_again, "the second call must find the first Patient, not create one"
    assert again.id == first.id, (again.id, first.id)
    assert [p.id for p in search.fetch_all()] == [first.id]


@check
def save_fields(client, env):
    """save(fields=[...]) changes only those fields (fhirpy PATCHes them as application/json)"""
    patient = new_patient(client, "Fields")
    patient["gender"] = "male"
    patient.save()
    patient["gender"] = "female"
    patient["birthDate"] = "2000-01-01"
    patient.save(fields=["gender"])
    stored = client.get("Patient", patient.id)
    assert stored["gender"] == "female", stored.get("gender")
    assert "birthDate" not in stored, "a field not named in fields= was saved"
    assert stored["name"] == [{"family": "Fields", "given": ["Py"]}], "fields not named are kept"
    assert stored["meta"]["versionId"] == "2", stored["meta"]


@check
def transaction(client, env):
    """a transaction bundle with urn:uuid references, through client.execute"""
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    patient = new_patient(client, "Transaction")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": patient_urn, "resource": patient.serialize(), "request": {"method": "POST", "url": "Patient"}},
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "heart rate"},
                    "subject": {"reference": patient_urn},
                    "valueQuantity": {"value": 61, "unit": "/min"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = client.execute("/", method="post", data=bundle)
    assert response["type"] == "transaction-response", response["type"]
    statuses = [e["response"]["status"].split(" ")[0] for e in response["entry"]]
    assert statuses == ["201", "201"], statuses
    patient_ref, observation_ref = (e["response"]["location"].split("/_history/")[0] for e in response["entry"])
    observation = client.reference(reference=observation_ref).to_resource()
    assert observation["subject"]["reference"] == patient_ref, observation["subject"]
    stored = client.resources("Patient").search(identifier=identifier_param(patient)).fetch()
    assert [f"Patient/{p.id}" for p in stored] == [patient_ref], "the transaction stored the Patient once"


@check
def history(client, env):
    """an instance history through execute('_history'), newest first, with its total"""
    patient = new_patient(client, "History")
    patient.save()
    patient["active"] = True
    patient.save()
    bundle = client.reference("Patient", patient.id).execute("_history", method="get")
    assert bundle["type"] == "history", bundle["type"]
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    assert bundle["entry"][0]["resource"]["active"] is True
    assert bundle.get("total") == 2, f"total: {bundle.get('total')}"


def main():
    if sys.argv[1:] == ["--list"]:
        for fn in CHECKS:
            print(json.dumps({"check": fn.__name__, "description": fn.__doc__}))
        return

    from fhirpy import SyncFHIRClient

    client = SyncFHIRClient(os.environ["FHIR_BASE_URL"], authorization=f"Bearer {os.environ['FHIR_TOKEN']}")
    env = {
        "patient": os.environ["SYNTHEA_PATIENT_ID"],
        "observations": json.loads(os.environ["SYNTHEA_OBSERVATION_IDS"]),
    }
    for fn in CHECKS:
        try:
            fn(client, env)
            result = {"check": fn.__name__, "ok": True}
        except Exception as e:  # noqa: BLE001 - every failure is reported, the other checks still run
            result = {"check": fn.__name__, "ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
