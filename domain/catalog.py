"""Every aggregate class, imported in one place.

Explicit topics (`zlh.Instance.Requested`, …) are registered when their class is
defined, so any process that decodes events must import them all first; the
event store imports this module for that reason.
"""

from __future__ import annotations

from domain.activity import InstanceActivity
from domain.announcement import Announcement
from domain.backup import Backup
from domain.backup_policy import BackupPolicy
from domain.billing import BillingAccount, StripeCustomer, StripeEvent
from domain.delivery import Delivery
from domain.instance import Instance
from domain.name_claim import NameClaim
from domain.node import Node, PortClaim
from domain.note import Note
from domain.operation import Operation
from domain.quota import Quota
from domain.repair import ControllerLeadership, Drift, Repair
from domain.schedule import Schedule, ScheduleRun
from domain.sftp import SftpPassword, SshKeyring
from domain.subuser import Subuser
from domain.support import SupportTicket, TicketCounter
from domain.user import Credential, User

AGGREGATES = (User, Credential, Instance, Operation, NameClaim, Backup, SupportTicket, TicketCounter,
              Announcement, Note, Delivery, ControllerLeadership, Drift, Repair,
              BillingAccount, StripeEvent, StripeCustomer, Schedule, ScheduleRun, InstanceActivity, Quota,
              Subuser, Node, PortClaim, BackupPolicy, SshKeyring, SftpPassword)
