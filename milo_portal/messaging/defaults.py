"""The templates a new team starts with.

Written the way the best-practice guide says: the next step is plainly an interactive
interview, how long it takes, why it matters, that it can be done any time on a phone, the
deadline, and how to get help. Texts are signed with the recruiter's name and company
(texts from unknown numbers are distrusted) and are personal (first name, role).
"""
from __future__ import annotations

KINDS = ("invite", "reminder", "nudge", "final_nudge")
CHANNELS = ("email", "sms", "whatsapp")
KIND_LABELS = {"invite": "Invite", "reminder": "Reminder", "nudge": "Nudge", "final_nudge": "Final nudge"}
CHANNEL_LABELS = {"email": "E-mail", "sms": "SMS", "whatsapp": "WhatsApp"}

# Outbox message kinds that use another kind's template.
TEMPLATE_KIND_FOR = {"manual_nudge": "nudge", "link_resend": "invite"}

EMAIL = {
    "invite": (
        "{{ candidate.first_name }}, your interview for {{ role }} at {{ company }}",
        "Hi {{ candidate.first_name }},\n\n"
        "Thank you for your interest in the {{ role }} role at {{ company }}. The next step is a short "
        "interactive interview: you answer a few questions in your own words, whenever it suits you.\n\n"
        "It takes about {{ duration }} and works on your phone or a computer. It is the best way for "
        "us to get to know you beyond your CV, and every answer is read by our team.\n\n"
        "Please finish it by {{ deadline }}.\n\n"
        "{{ link }}\n\n"
        "Questions? Contact {{ support_contact }}.\n\n"
        "{{ recruiter_name }}\n{{ company }}",
    ),
    "reminder": (
        "Reminder: your {{ role }} interview at {{ company }}",
        "Hi {{ candidate.first_name }},\n\n"
        "A quick reminder: your interview for {{ role }} at {{ company }} is waiting for you. It takes "
        "about {{ duration }}, and you can do it now on your phone.\n\n"
        "The deadline is {{ deadline }}.\n\n"
        "{{ link }}\n\n"
        "If something is in the way, contact {{ support_contact }}.\n\n"
        "{{ recruiter_name }}\n{{ company }}",
    ),
    "nudge": (
        "{{ candidate.first_name }}, you're almost there",
        "Hi {{ candidate.first_name }},\n\n"
        "You started your interview for {{ role }} at {{ company }} — thank you! Your answers so far "
        "are saved. Pick up where you left off before {{ deadline }}:\n\n"
        "{{ link }}\n\n"
        "Need help? Contact {{ support_contact }}.\n\n"
        "{{ recruiter_name }}\n{{ company }}",
    ),
    "final_nudge": (
        "Last chance: your {{ role }} interview closes soon",
        "Hi {{ candidate.first_name }},\n\n"
        "Your interview for {{ role }} at {{ company }} closes at {{ deadline }}. Your answers so far are "
        "saved; it only takes a few minutes to finish:\n\n"
        "{{ link }}\n\n"
        "If you need more time, contact {{ support_contact }}.\n\n"
        "{{ recruiter_name }}\n{{ company }}",
    ),
}

SMS = {
    "invite": "Hi {{ candidate.first_name }}, it's {{ recruiter_name }} from {{ company }}. Next step for "
              "{{ role }}: a {{ duration }} interview you can do on your phone anytime before {{ deadline }}: "
              "{{ link }} Reply STOP to opt out.",
    "reminder": "Hi {{ candidate.first_name }}, {{ recruiter_name }} from {{ company }} here. Your {{ role }} "
                "interview ({{ duration }}) is waiting: {{ link }} Deadline {{ deadline }}.",
    "nudge": "Hi {{ candidate.first_name }}, you're part-way through your {{ role }} interview - your answers "
             "are saved. Finish before {{ deadline }}: {{ link }} - {{ recruiter_name }}, {{ company }}",
    "final_nudge": "{{ candidate.first_name }}, your {{ role }} interview closes {{ deadline }}. A few minutes "
                   "to finish: {{ link }} - {{ recruiter_name }}, {{ company }}",
}


def default_content(kind: str, channel: str) -> tuple[str | None, str]:
    """The shipped (subject, body) for a kind and channel."""
    if channel == "email":
        return EMAIL[kind]
    return None, SMS[kind]
