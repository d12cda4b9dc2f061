"""The OpenAPI 3.1 document of /api/v1/ (tests check every route's real responses against it)."""
from __future__ import annotations

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS = {
    "Problem": {
        "type": "object", "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "Message per field name."},
        },
    },
    "Agent": {
        "type": "object", "required": ["id", "title", "share_link"], "additionalProperties": False,
        "properties": {"id": {"type": "integer"}, "title": {"type": "string"},
                       "share_link": {"type": ["string", "null"], "format": "uri",
                                      "description": "null while the share link is switched off"}},
    },
    "AgentList": {
        "type": "object", "required": ["data"], "additionalProperties": False,
        "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Agent"}}},
    },
    "Candidate": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "agent_id", "name", "email", "phone", "timezone", "channel", "source", "source_detail",
                     "stage", "link", "deadline_at", "invited_at", "started_at", "completed_at", "created_at",
                     "updated_at"],
        "properties": {
            "id": {"type": "integer"}, "agent_id": {"type": "integer"}, "name": _NULLABLE_STR,
            "email": _NULLABLE_STR, "phone": {**_NULLABLE_STR, "description": "E.164"},
            "timezone": {"type": "string"}, "channel": {"enum": ["email", "sms", "whatsapp", "link"]},
            "source": {"enum": ["manual", "bulk", "share_link", "api", "ats", "indeed"]},
            "source_detail": _NULLABLE_STR,
            "stage": {"enum": ["added", "invited", "opened", "clicked", "started", "completed", "expired",
                               "opted_out"]},
            "link": {"type": "string", "format": "uri", "description": "The candidate's unique interview link."},
            "deadline_at": _NULLABLE_TIME, "invited_at": _NULLABLE_TIME, "started_at": _NULLABLE_TIME,
            "completed_at": _NULLABLE_TIME, "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "created": {"type": "boolean", "description": "Only when creating: false when the person was there."},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        },
    },
    "Event": {
        "type": "object", "required": ["type", "at", "channel", "detail"], "additionalProperties": False,
        "properties": {"type": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
                       "channel": _NULLABLE_STR, "detail": _NULLABLE_STR},
    },
    "CandidatePage": {
        "type": "object", "required": ["data", "next_cursor"], "additionalProperties": False,
        "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Candidate"}},
                       "next_cursor": _NULLABLE_STR},
    },
    "NewCandidate": {
        "type": "object", "additionalProperties": False,
        "description": "An e-mail address or a phone number (or both) is required.",
        "properties": {
            "name": {"type": "string", "maxLength": 200}, "email": {"type": "string", "maxLength": 200},
            "phone": {"type": "string", "maxLength": 200, "description": "E.164, or national for the team's country"},
            "timezone": {"type": "string", "description": "IANA zone; from the phone number when left out"},
            "channel": {"enum": ["email", "sms", "whatsapp", "link"]},
            "source_detail": {"type": "string", "maxLength": 100},
            "external_id": {"type": "string", "maxLength": 200,
                            "description": "Your id for the person: the same id again returns the same candidate"},
            "invite": {"type": "boolean", "default": True, "description": "Queue the invite now"},
        },
    },
}


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _ok(description: str, schema: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


COMMON = {"401": _problem("Missing, wrong or revoked API key"),
          "429": {**_problem("Rate limit reached: wait Retry-After seconds"),
                  "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}
AGENT_ID = {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def document(server: str) -> dict:
    """The OpenAPI 3.1 document, with ``server`` as the base URL."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Milo Portal API", "version": "1.0.0",
                 "description": "Create candidates from any system and get their unique interview link back."},
        "servers": [{"url": server}],
        "security": [{"bearer": []}],
        "paths": {
            "/agents": {"get": {"operationId": "listAgents", "summary": "Interview agents",
                                "responses": {"200": _ok("Agents not archived", "AgentList"), **COMMON}}},
            "/agents/{agent_id}/candidates": {
                "post": {
                    "operationId": "createCandidate", "summary": "Add a candidate (and queue the invite)",
                    "parameters": [AGENT_ID, {"name": "Idempotency-Key", "in": "header", "required": False,
                                              "schema": {"type": "string", "maxLength": 200}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/NewCandidate"}}}},
                    "responses": {"201": _ok("Created", "Candidate"),
                                  "200": _ok("Already a candidate of this agent", "Candidate"),
                                  "404": _problem("No such agent"),
                                  "422": _problem("Invalid fields (see errors), or an Idempotency-Key reused "
                                                  "with another body"), **COMMON}},
                "get": {
                    "operationId": "listCandidates", "summary": "Candidates changed since a moment",
                    "parameters": [AGENT_ID,
                                   {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                                   {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                                   {"name": "limit", "in": "query",
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}],
                    "responses": {"200": _ok("A page, oldest change first", "CandidatePage"),
                                  "404": _problem("No such agent"), "422": _problem("Invalid parameters"),
                                  **COMMON}},
            },
            "/candidates/{candidate_id}": {"get": {
                "operationId": "getCandidate", "summary": "One candidate with their events",
                "parameters": [{"name": "candidate_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": _ok("The candidate", "Candidate"), "404": _problem("No such candidate"),
                              **COMMON}}},
        },
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An API key from Settings → API keys"}}},
    }
