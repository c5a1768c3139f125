"""Break one guarded line at a time and check that the tests named for it go red (then put it back).

Run: `python tests/mutations.py [name ...]`. Each row is a protection a comment promises; GREEN means no test
notices it missing. Not collected by pytest: it runs the suite once per mutation.
"""
import pathlib
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MUTATIONS = [
    ('outbox insert replaces a queued post', 'storage/store.py', 'AND {heard} ON CONFLICT DO NOTHING",', 'AND {heard} ON CONFLICT (key) DO UPDATE SET state = \'pending\'",', 'tests/test_delivery.py -k owed_twice'),
    ('outbox insert fails on a queued post', 'storage/store.py', 'AND {heard} ON CONFLICT DO NOTHING",', 'AND {heard}",', 'tests/test_delivery.py -k owed_twice'),
    ('unfollow keeps queued', 'storage/store.py', '                "DELETE FROM announcements WHERE channel_id = ? AND provider = ? AND job_id = ?"\n', '                "SELECT ?, ?, ? WHERE 0"\n', 'tests/test_delivery.py -k unfollowing'),
    ('mark_polled no-op', 'storage/store.py', '                    db.conn.execute(f"UPDATE jobs SET polled_at = ? WHERE provider = ?"', '                    db.conn.execute(f"UPDATE jobs SET polled_at = polled_at WHERE ? > 0 AND provider = ?"', 'tests/test_foundation.py -k take_turns'),
    ('tag check removed', 'bot/providers/openai_shape.py', '                             if (j.metadata or {}).get(REQUEST_KEY) == request_id), None)', '                             ), None)', 'tests/test_foundation.py -k ignores_the_filter'),
    ("suffix comparison removed", "bot/providers/calls.py", " and (job.suffix or None) == (suffix or None)", "", "tests/test_foundation.py -k another_suffix"),
    ("give-up by attempts", "bot/delivery.py", "if waiting >= self.give_up_seconds:", "if row['attempts'] >= 3:", "tests/test_delivery.py -k give_up"),
    ("429 spends attempts", "bot/delivery.py", "self.store.release(key, self.worker_id, at=at, note=failure.reason)", "self.store.mark_retry(key, self.worker_id, at=at, error=failure.reason, uncertain=False)", "tests/test_delivery.py -k minutes_of_rate"),
    ("when() in local time", "bot/messages.py", "time.gmtime(ts)", "time.localtime(ts)", "tests/test_messages.py -k utc"),
    ("discard on error removed", "storage/engines.py", "        except sqlite3.Error as error:\n            if not _is_busy(error):\n                self._discard()\n            raise\n\n    def rows", "        except sqlite3.Error:\n            raise\n\n    def rows", "tests/test_foundation.py -k recovers"),
    ("WAL switch not retried", "storage/engines.py", "                if not _is_busy(error) or time.monotonic() >= deadline:", "                if True:", "tests/test_storage.py -k rollback_mode"),
    ("share not once", "storage/store.py", '            if rows[0]["shared_at"] is not None:\n                return "shared", None\n', "", "tests/test_trying.py -k shared_once"),
    ("failed share keeps its claim", "bot/trying.py", "            self.store.unclaim_share(share_id)  # not shared after all: the button works again\n", "", "tests/test_trying.py -k tried_again"),
    ("trigger replay check removed", "handlers/commands.py", "if trigger_id and not services.store.first_sight_of_trigger(trigger_id):", "if False:", "tests/test_foundation.py -k replayed"),
    ("connection limit default", "bot/web.py", "CONNECTION_LIMIT = 1000", "CONNECTION_LIMIT = 100", "tests/test_foundation.py -k slow_connections"),
    ("request deadline removed", "bot/web.py", "                channel.will_close = True", "                pass", "tests/test_foundation.py -k never_finishes"),
    ("scrub posts removed", "bot/slack.py", '"text": self.scrub(message.text), "blocks": self.scrub.deep(message.blocks),\n                  "unfurl_links"', '"text": message.text, "blocks": message.blocks,\n                  "unfurl_links"', "tests/test_guards.py -k gateway"),
    ("reply fallback removed", "bot/slack.py", "        return self._send_reply(response_url, short) is None", "        return False", "tests/test_foundation.py -k refuses_is_logged"),
    ("signature before body", "bot/web.py", "        if not verifier.is_valid_request(text, headers):", "        if False:", "tests/test_foundation.py -k malformed"),
    ("pacing spacing off", "bot/delivery.py", "CHANNEL_SPACING = 1.0", "CHANNEL_SPACING = 0.0", "tests/test_delivery.py -k busy_channel"),
    ("wait inline off", "bot/delivery.py", "WAIT_FOR_NEXT = 1.5", "WAIT_FOR_NEXT = 0.0", "tests/test_delivery.py -k busy_channel"),
    ("pause cap off", "bot/poller.py", "self.max_skip = max(0, min(MAX_SKIPPED_CYCLES, int(MAX_PAUSE_SECONDS // interval) - 1))", "self.max_skip = MAX_SKIPPED_CYCLES", "tests/test_poller.py -k two_minutes"),
    ("id pattern dots", "bot/commands.py", 'ID_PATTERN = re.compile(r"(?=.{1,200}$)[A-Za-z0-9][A-Za-z0-9_.:\\-]*(?:/(?!\\.\\.?(?:/|$))[A-Za-z0-9_.:\\-]+)*")', 'ID_PATTERN = re.compile(r"(?=.{1,200}$)[A-Za-z0-9_.:\\-]*(?:/[A-Za-z0-9_.:\\-]*)*")', "tests/test_commands.py"),
    # (both ways close a live thread's connection: closing them, and dropping the thread-locals that hold them)
    ("close leaves others", "storage/engines.py", "            conns = list(self._open.values())\n            self._open.clear()  # the same dict the holders know: a holder going later finds nothing to remove\n        for conn in conns:\n            try:\n                conn.close()\n            except sqlite3.Error:\n                pass\n        self._local = threading.local()\n", "            conns = []\n            self._open.clear()  # the same dict the holders know: a holder going later finds nothing to remove\n        for conn in conns:\n            try:\n                conn.close()\n            except sqlite3.Error:\n                pass\n", "tests/test_foundation.py -k no_database_handle"),
    ("prune webhooks off", "storage/store.py", '"webhook_deliveries": db.conn.execute("DELETE FROM webhook_deliveries WHERE received_at < ?",', '"webhook_deliveries": db.conn.execute("SELECT ?",', "tests/test_foundation.py -k forgotten"),
    ("health ignores db", "bot/app.py", "        if problem:\n            return False, problem", "        if False:\n            return False, problem", "tests/test_foundation.py -k cannot_be_written"),
    ('together completed means nothing', 'bot/providers/together_shape.py', 'STATES = {"completed": "succeeded", ', 'STATES = {', 'tests/test_together.py -k every_status_word'),
    ('together failure reason unread', 'bot/providers/together_shape.py', '            job = _with_error(job, reason)', '            pass', 'tests/test_together.py -k reason'),
    ('together reads taken for a create', 'bot/providers/together_shape.py', '    return request is None or (request.method == "POST"', '    return True or (request.method == "POST"', 'tests/test_together.py -k lost_read'),
    ("listing's unexplained failures not read", 'bot/poller.py', '        missing = [job_id for job_id in wanted if job_id not in seen] + unexplained', '        missing = [job_id for job_id in wanted if job_id not in seen]', 'tests/test_poller.py -k cheapest'),
    ('one provider per cycle at a time', 'bot/poller.py', '        if len(asked) == 1:', '        if True:\n            for pair in asked:\n                self._record(report, *self._poll(*pair))\n        elif False:', 'tests/test_providers.py -k outage'),
    ('per-provider options unchecked', 'bot/jobs.py', '        if refused:\n', '        if False:\n', 'tests/test_providers.py -k own_options'),
    ('stopped-taking-jobs never seen', 'bot/providers/calls.py', '    if status not in {400, 403, 404, 410}:\n        return False', '    if True:\n        return False', 'tests/test_providers.py -k stopped_taking'),
    ('legacy rows not adopted', 'bot/app.py', '    if legacy in providers and store.adopt_unnamed(legacy):', '    if False:', 'tests/test_providers.py -k before_providers'),
    ('outcome queued across providers', 'storage/store.py', '        where = "provider = ? AND job_id = ?"', '        where = "? != \'\' AND job_id = ?"', 'tests/test_storage.py -k same_job_id'),
    ('never-seen id asks every provider', 'bot/jobs.py', '        candidates = self.providers.fitting(job_id)', '        candidates = list(self.providers)', 'tests/test_providers.py -k never_seen'),
    ('changed file uploaded anyway', 'bot/data_flow.py', '            if _sha256(stream) != digest:', '            if False:', 'tests/test_data_flow.py -k changed_after'),
    ('second confirm click acts again', 'bot/data_flow.py', '        if not self.store.first_sight_of_trigger(f"data-confirm:{view_id}"):', '        if False:', 'tests/test_data_flow.py -k followed_job'),
    ('a broken file gets the button', 'bot/data_flow.py', '        ok = report.ok\n', '        ok = True\n', 'tests/test_data_flow.py -k never_uploaded'),
    ('vocabulary not verified', 'bot/tokens.py', '    if hashlib.sha256(raw).hexdigest() != spec["sha256"]:', '    if False:', 'tests/test_training_data.py -k damaged'),
    ('file name unescaped in the report', 'bot/views.py', '    head = (f":white_check_mark: *{escape(filename)}* is ready." if ok else\n            f":x: *{escape(filename)}* has problems', '    head = (f":white_check_mark: *{escape(filename)}* is ready." if ok else\n            f":x: *{filename}* has problems', 'tests/test_data_flow.py -k hostile'),
    ('too-long examples pass', 'bot/training_data.py', '        if limit and count > limit:', '        if False:', 'tests/test_training_data.py -k every_kind'),
    ('models asked one at a time', 'bot/trying.py', 'MODEL_CALLS_AT_ONCE = 8', 'MODEL_CALLS_AT_ONCE = 1', 'tests/test_trying.py -k at_once'),
    ('anyone may share', 'storage/store.py', '            if rows[0]["user_id"] != user_id:', '            if False:', 'tests/test_trying.py -k share'),
    ('unfinished jobs tried', 'bot/trying.py', '            if job.state != "succeeded" or not job.fine_tuned_model:', '            if False:', 'tests/test_trying.py -k refusals'),
    ('model output unescaped', 'bot/comparison.py', '    shown = _clip(escape(text), limit)', '    shown = _clip(text, limit)', 'tests/test_trying.py -k inert'),
    ('no cap on answer tokens', 'bot/providers/openai_shape.py', '                                                                    max_completion_tokens=max_tokens))', '                                                                    max_completion_tokens=4096))', 'tests/test_trying.py -k side_by_side'),
    ('long prompts sent', 'bot/trying.py', '        if len(prompt) > self.max_prompt_chars:', '        if False:', 'tests/test_trying.py -k refusals'),
    ('chart on every announcement', 'bot/charting.py', '        if row.get("kind") != "announcement" or row.get("outcome") != "succeeded" or self._stopping.is_set():', '        if row.get("kind") != "announcement" or self._stopping.is_set():', 'tests/test_charts.py -k failures_get_no_chart'),
    ('chart outside the thread', 'bot/charting.py', '            self.share(owner, job, row["channel_id"], thread_ts=ts)', '            self.share(owner, job, row["channel_id"])', 'tests/test_charts.py -k thread'),
    ('dm follow lands in the channel', 'bot/jobs.py', '            new, _ = self._follow(dm, job, origin="dm")', '            new, _ = self._follow(caller, job, origin="dm")', 'tests/test_scenario.py -k direct_message'),
    ('failures-only channels hear all', 'storage/store.py', 'f" user_id, origin, \'pending\', ?, ? FROM subscriptions WHERE {where} AND {heard} ON CONFLICT DO NOTHING",', 'f" user_id, origin, \'pending\', ?, ? FROM subscriptions WHERE {where} AND ? IS NOT NULL ON CONFLICT DO NOTHING",', 'tests/test_scenario.py -k settings'),
    ('mentions always on', 'bot/messages.py', '    if subscription.mention and SLACK_USER_ID.fullmatch(user):', '    if SLACK_USER_ID.fullmatch(user):', 'tests/test_scenario.py -k settings'),
    ('stop abandons the chart being drawn', 'bot/charting.py', '        self.wait_idle(timeout)\n', '        pass\n', 'tests/test_charts.py -k stopping'),
    ('refresh stays with the clicker', 'bot/jobs.py', '        return replace(shown, in_channel=True)', '        return shown', 'tests/test_scenario.py -k refresh'),
    ('outcome before its card', 'bot/delivery.py', '            if card is not None and card["state"] in {"pending", "sending"}:', '            if False:', 'tests/test_cards.py -k waits_for_its_card'),
    ('progress replies unthrottled', 'storage/store.py', '                " AND (s.progress_at IS NULL OR s.progress_at <= ? - 60 * coalesce(c.progress_minutes, 5))")', '                " AND ? IS NOT NULL")', 'tests/test_cards.py -k "throttled or both_found"'),
    ('lost outcome answer re-posted', 'bot/delivery.py', '        if row["uncertain"] and row["kind"] != "card_update":', '        if False:', 'tests/test_cards.py -k lost_answer'),
    ('outcome only in the thread', 'bot/delivery.py', '              broadcast: bool = True) -> str:', '              broadcast: bool = False) -> str:', 'tests/test_cards.py -k edited_in_place'),
    ('gone card loses the outcome', 'bot/delivery.py', '                if failure.reason not in CARD_GONE_ERRORS:\n                    raise\n                log.warning("the card', '                if True:\n                    raise\n                log.warning("the card', 'tests/test_cards.py -k gone_before'),
    ('card edits never made', 'bot/delivery.py', '        if card["card_revision"] >= wanted:', '        if True:', 'tests/test_cards.py -k edited_in_place'),
    ('card edits the card already shows', 'bot/delivery.py', '        if card["card_revision"] >= wanted:', '        if False:', 'tests/test_cards.py -k waits_for_its_card'),
    ('progress re-posted after a lost answer', 'bot/delivery.py', '        if row["uncertain"] and row["kind"] == "progress":', '        if False:', 'tests/test_cards.py -k at_most_once'),
    ('stale progress after the outcome', 'bot/delivery.py', '        if job.final:\n            self.store.mark_skipped', '        if False:\n            self.store.mark_skipped', 'tests/test_cards.py -k at_most_once'),
    ('cards=off ignored', 'storage/store.py', '            if card and not final and self._setting(db.conn, channel_id, "cards"):', '            if card and not final:', 'tests/test_cards.py -k each_setting'),
    ('progress=off ignored', 'storage/store.py', '            if not final and self._setting(conn, channel_id, "progress"):', '            if not final:', 'tests/test_cards.py -k each_setting'),
    ('card refresh draws a status message', 'handlers/actions.py', '        if refresh and card:', '        if False:', 'tests/test_cards.py -k from_the_card'),
    ('card edits not scrubbed', 'bot/slack.py', 'text=self.scrub(message.text),\n                   blocks=self.scrub.deep(message.blocks))', 'text=message.text,\n                   blocks=message.blocks)', 'tests/test_guards.py -k gateway'),
    ('too-long card edit lost', 'bot/delivery.py', '                return send(message.plain())', '                raise', 'tests/test_cards.py -k too_long'),
    ('following again keeps the old card', 'storage/store.py', '                " AND (state = \'pending\' OR kind IN (\'card\', \'card_update\', \'progress\'))",', '                " AND state = \'pending\'",', 'tests/test_cards.py -k following_again'),
    ('outcome waits on a stale lease', 'bot/delivery.py', '                held = card["lease_until"] if card["state"] == "sending" else card["next_attempt_at"]', '                held = max(card["lease_until"] or 0, card["next_attempt_at"] or 0)', 'tests/test_cards.py -k waits_for_its_card'),
    ('progress before the status change', 'bot/poller.py', '        queued = self.store.record_jobs((job.fields(), job.outcome) for job in seen.values()) if seen else 0\n', '        _p = 0 if error else self._progress(provider, seen, counter)\n        queued = self.store.record_jobs((job.fields(), job.outcome) for job in seen.values()) if seen else 0\n        progress = _p\n        return provider.name, seen, counter[0], error, queued, progress\n', 'tests/test_cards.py -k before_the_steps'),
    ('a job with no new step read every poll', 'storage/store.py', '                asked_at = now - 60 * minutes if step is None and soon else now', '                asked_at = now - 60 * minutes', 'tests/test_cards.py -k no_new_step'),
    ('no cap on metric reads a cycle', 'bot/poller.py', '[job.id for job in running])[:self.max_progress_reads]', '[job.id for job in running])', 'tests/test_cards.py -k in_turn'),
    ('ended jobs keep every edit and reply', 'storage/store.py', '                    "DELETE FROM announcements WHERE kind IN (\'card_update\', \'progress\')"', '                    "SELECT 1 FROM announcements WHERE kind IN (\'card_update\', \'progress\')"', 'tests/test_cards.py -k pruned'),
    ('pruning a running job\'s rows', 'storage/store.py', ' AND j.final = 1)",\n                    (now - INTENT_RETENTION_SECONDS,)).rowcount,', ')",\n                    (now - INTENT_RETENTION_SECONDS,)).rowcount,', 'tests/test_cards.py -k pruned'),
    ('an unfollowed card left as it was', 'bot/jobs.py', '                    self._retire_card(channel, card["card_ts"], job_id, name)', '                    pass', 'tests/test_cards.py -k stops_following'),
    ('two edits of a card at once', 'bot/delivery.py', '        if row["kind"] == "card_update" and self.store.card_edit_in_flight(row, self.clock()):', '        if False:', 'tests/test_cards.py -k one_edit_of_a_card'),
    ('a found card not kept', 'bot/delivery.py', '                if row["kind"] == "card":\n                    self.store.set_card(channel, row["job_id"], row["provider"], ts=ts)', '                if False:\n                    pass', 'tests/test_cards.py -k found_not_posted'),
    ('edits queued for a refused card', 'storage/store.py', '" AND a.kind = \'card\' AND a.state != \'failed\' AND (s.card_ts IS NULL OR s.card_ts != \'\')",', '" AND a.kind = \'card\'",', 'tests/test_cards.py -k refuses_falls_back'),
    ('the shell sends a try form to file picking', 'bot/shell.py', '                hint = ("Its answers show here once it is sent."\n                        if record["view"].get("callback_id") == TRY_CALLBACK else', '                hint = ("Its answers show here once it is sent."\n                        if False else', 'tests/test_shell.py -k try_it'),
    ('outcomes wait behind edits', 'storage/store.py', '            " ORDER BY CASE kind WHEN \'announcement\' THEN 0 WHEN \'card_update\' THEN 2 WHEN \'progress\' THEN 2"', '            " ORDER BY CASE kind WHEN \'announcement\' THEN 0 WHEN \'card_update\' THEN 0 WHEN \'progress\' THEN 0"', 'tests/test_cards.py -k busy_channel'),
    ('outcomes wait behind other cards', 'storage/store.py', '            " AND o.provider = announcements.provider AND o.job_id = announcements.job_id) THEN 0 ELSE 1 END"', '            " AND o.provider = announcements.provider AND o.job_id = announcements.job_id) THEN 0 ELSE 0 END"', 'tests/test_cards.py -k other_jobs_still'),
    ('refresh adds a message instead', 'handlers/actions.py', '            send(services.jobs.refresh(caller, job_id, provider), replace=True)', '            send(services.jobs.refresh(caller, job_id, provider))', 'tests/test_scenario.py -k refresh'),
    ('claim ignores a live lease', 'storage/store.py', 'OR (state = \'sending\' AND lease_until <= ?))"\n', 'OR (state = \'sending\' AND ? IS NOT NULL))"\n', 'tests/test_guards.py -k lease'),
    ('try button skips the allow-lists', 'handlers/trying.py', '        refusal = services.jobs.refusal(Command("try", {}), caller)', '        refusal = None', 'tests/test_guards.py -k try_it_button'),
    ('data confirm skips the allow-lists', 'bot/data_flow.py', '        refusal = self.jobs.refusal(Command(mode, {}), caller)\n        if refusal:', '        refusal = self.jobs.refusal(Command(mode, {}), caller)\n        if False:', 'tests/test_guards.py -k confirm_checks'),
    ('no 50-block cap', 'bot/messages.py', '    if len(blocks) > MAX_BLOCKS:', '    if False:', 'tests/test_guards.py -k fifty'),
    ('response_url by name kept', 'bot/scrub.py', '        return _NAMED_URL.sub(lambda m: m[1] + REDACTED, text)', '        return text', 'tests/test_guards.py -k response_url'),
    ('tracebacks not scrubbed', 'bot/logs.py', '            record.exc_text = self.redact(record.exc_text)', '            pass', 'tests/test_guards.py -k traceback'),
    ('together answers uncapped', 'bot/providers/together_shape.py', '                                                                    max_tokens=max_tokens))', '                                                                    max_tokens=4096))', 'tests/test_guards.py -k together_answers'),
    ('a closed start closed again', 'storage/store.py', '                " WHERE request_id = ? AND (state = \'pending\' OR state LIKE \'reconciling:%\')",', '                " WHERE request_id = ?",', 'tests/test_guards.py -k closed_once'),
    ('unknown settings accepted', 'storage/store.py', '        if unknown:\n            raise ValueError', '        if False:\n            raise ValueError', 'tests/test_guards.py -k unknown_channel_setting'),
    ('provider file read uncapped', 'bot/providers/calls.py', '        if read > max_bytes:\n            raise ProviderError(f"The file is larger', '        if False:\n            raise ProviderError(f"The file is larger', 'tests/test_hardening.py -k file_lines'),
    ("a thread's connection outlives it", 'storage/engines.py', '    def __del__(self) -> None:\n        self.close()', '    def __del__(self) -> None:\n        pass', 'tests/test_hardening.py -k "thread_that_used or hundreds"'),
    ('forms answered on the model-call pool', 'bot/trying.py', '        return waiting, lambda: self._background.submit(self._guarded, answer)', '        return waiting, lambda: self._calls.submit(self._guarded, answer)', 'tests/test_hardening.py -k twenty_try_it'),
    ('download without a deadline', 'bot/slack.py', '                    if time.monotonic() > deadline:', '                    if False:', 'tests/test_hardening.py -k trickling'),
    ('download from any host', 'bot/slack.py', '        if origin is None or not self._may_fetch(origin):', '        if origin is None:', 'tests/test_hardening.py -k off_slacks_hosts'),
    ('redirect to any host', 'bot/slack.py', '        if target is None or not self.may_fetch(target):', '        if target is None:', 'tests/test_hardening.py -k redirect_to_another_host'),
    ('token kept across origins', 'bot/slack.py', '            new.remove_header("Authorization")', '            pass', 'tests/test_hardening.py -k drops_the_token'),
    ('garbage escapes the adapter', 'bot/providers/calls.py', '            setattr(cls, name, _guarded(method, creating=name == "create_job"))', '            pass', 'tests/test_hardening.py -k "garbage or unreadable"'),
    ('a form submitted twice', 'storage/store.py', '            if row["submitted_at"] is not None:\n                return "submitted", None\n', '', 'tests/test_hardening.py -k replayed_try_it'),
    ('anyone may send a form', 'storage/store.py', '            if row["user_id"] != user_id:\n                return "not_yours", None', '            if False:\n                return "not_yours", None', 'tests/test_hardening.py -k someone_else'),
    ('a form skips the allow-lists', 'bot/trying.py', '        if refusal:\n            return {"response_action": "errors", "errors": {"prompt": refusal}}, None', '        if False:\n            return {"response_action": "errors", "errors": {"prompt": refusal}}, None', 'tests/test_hardening.py -k allow_lists_apply'),
    ('cut before scrubbed', 'bot/messages.py', '    text = _SCRUB(text)\n    if len(text) <= limit:', '    if len(text) <= limit:', 'tests/test_hardening.py -k token_shaped'),
    ('provider text not scrubbed where it enters', 'bot/providers/calls.py', '            return _scrubbed(method(self, *args, **kwargs), getattr(self, "_redact", None) or SHAPES)', '            return method(self, *args, **kwargs)', 'tests/test_guards.py -k enters'),
    ("try form over Slack's input limit", 'bot/views.py', '    longest = min(max_prompt_chars, MAX_INPUT_LENGTH)', '    longest = max_prompt_chars', 'tests/test_hardening.py -k input_limits'),
    ('together metrics by made-up keys', 'bot/providers/together_shape.py', 'METRIC_STEP, METRIC_TRAIN_LOSS, METRIC_EVAL_LOSS = "train/global_step", "train/loss", "eval/loss"', 'METRIC_STEP, METRIC_TRAIN_LOSS, METRIC_EVAL_LOSS = "global_step", "train_loss", "eval_loss"', 'tests/test_together.py -k specs_keys'),
    ('aliases not resolved', 'bot/training_data.py', '    model = aliases.get(model, model)\n', '', 'tests/test_training_data.py -k aliases'),
    ('epochs rounded up', 'bot/providers/openai_shape.py', '        return min(25, 100 // examples)', '        return min(25, -(-100 // examples))', 'tests/test_training_data.py -k epoch_default'),
    ('too few examples pass', 'bot/training_data.py', ' and self.examples > 0 and not self.too_few', ' and self.examples > 0', 'tests/test_training_data.py -k fewer_than_ten'),
    ('duplicates remembered without bound', 'bot/training_data.py', '        elif len(seen) < DUPLICATES_REMEMBERED:', '        else:', 'tests/test_training_data.py -k bounded_memory'),
    ('similarity over whole answers', 'bot/scoring.py', '    return difflib.SequenceMatcher(None, expected.strip()[:SIMILARITY_CHARS], answer.strip()[:SIMILARITY_CHARS],', '    return difflib.SequenceMatcher(None, expected.strip(), answer.strip(),', 'tests/test_hardening.py -k bounded_prefix'),
    ('jobs read for metrics before training', 'bot/poller.py', ' and job.status in provider.training_statuses]', ']', 'tests/test_cards.py -k not_yet_training'),
    ('no first step read until an interval', 'bot/poller.py', '                self.store.queue_progress(provider.name, job_id, None, None, soon=True)', '                self.store.queue_progress(provider.name, job_id, None, None)', 'tests/test_cards.py -k not_yet_training'),
    ("the bot's finding told as a provider's", 'bot/jobs.py', 'status=404, code="job_not_found", own=True)', 'status=404, code="job_not_found")', 'tests/test_hardening.py -k own_finding'),
    ('card edits spend the post pace', 'bot/delivery.py', '            (self._not_before if pace is None else pace)[channel] = self.clock() + CHANNEL_SPACING', '            self._not_before[channel] = self.clock() + CHANNEL_SPACING', 'tests/test_cards.py -k never_holds_back'),
    ("outcomes wait for the cycle's metric reads", 'bot/poller.py', '        if queued:\n            self.on_queued()  # the sender goes now', '        if False:\n            self.on_queued()  # the sender goes now', 'tests/test_hardening.py -k while_the_cycles_metric_reads'),
    ('charts draw before outcomes go', 'bot/charting.py', '        while not self.quiet() and time.monotonic() < deadline and not self._stopping.wait(0.1):', '        while False and time.monotonic() < deadline and not self._stopping.wait(0.1):', 'tests/test_hardening.py -k chart_waits'),
    ('a wave of edits holds outcomes back', 'bot/delivery.py', '                    if row["kind"] in LOW_PRIORITY and self.clock() - fetched > REFETCH_AFTER:', '                    if False:', 'tests/test_delivery.py -k refetch'),
    ("outcomes wait out a reply's spacing", 'bot/delivery.py', '                  and self._posts_in_hand(channel) >= 1 - IN_HAND_SLACK)', '                  and False)', 'tests/test_cards.py -k spacing_but_outcomes'),
    ('a reply takes the post kept for an outcome', 'bot/delivery.py', '            short = POST_BURST - self._posts_in_hand(channel)', '            short = POST_BURST - 1 - self._posts_in_hand(channel)', 'tests/test_cards.py -k kept_for_a_waves'),
    ('no burst', 'bot/delivery.py', 'POST_BURST = 3', 'POST_BURST = 1', 'tests/test_delivery.py -k busy_channel'),
    ('bursts without bound', 'bot/delivery.py', '            self._in_hand[channel] = (self._posts_in_hand(channel) - 1, self.clock())', '            pass', 'tests/test_delivery.py -k busy_channel'),
    ("an outcome outruns Slack's wait", 'bot/delivery.py', '        yields = (due["kind"] == "announcement" and self.clock() >= self._held_until.get(channel, 0)', '        yields = (due["kind"] == "announcement"', 'tests/test_cards.py -k holds_back_the_outcomes'),
    ("a reply's wait holds outcomes back", 'bot/delivery.py', '            self.store.defer_channel(channel, not_before, kinds=DEFERRED_WITH.get(due["kind"], POSTS))', '            self.store.defer_channel(channel, not_before, kinds=None if due["kind"] != "card_update" else ("card_update",))', 'tests/test_cards.py -k holds_back_no_outcome'),
    ('replayed clicks acted on again', 'handlers/replies.py', '    return not trigger_id or services.store.first_sight_of_trigger(str(trigger_id))', '    return True', 'tests/test_guards.py -k replayed_click'),
    ('no warm-up at build', 'bot/app.py', '        provider.warm()  # its SDK\'s first-use work now, not inside the first commands\' acks', '        pass', 'tests/test_hardening.py -k first_use'),
    ('charts drawn in the bot process', 'bot/charting.py', '                    return drawer.draw(points, title, timeout=DRAW_DEADLINE)', '                    return drawing.loss_png(points, title)', 'tests/test_bench.py -k idle_memory'),
    ('idle drawer kept for ever', 'bot/charting.py', '            if self._drawer is None or self._drawing or time.monotonic() - self._last_drawn < idle:', '            if True:', 'tests/test_charts.py -k own_ended'),
    ('a dead drawer is used again', 'bot/charting.py', '                            self._drawer = None  # the next chart starts a new one', '                            pass', 'tests/test_charts.py -k own_ended'),
    ('drawer outlives the bot', 'bot/charting.py', '            drawer.close(timeout - (time.monotonic() - started))  # its process ends with the bot, never left behind', '            pass', 'tests/test_charts.py -k own_ended'),
    ('maintenance keeps an idle drawer', 'bot/app.py', '        services.charts.release_idle()', '        pass', 'tests/test_charts.py -k maintenance_ends'),
    ('a hung drawer holds up stop', 'bot/charting.py', '            self.process.kill()', '            pass', 'tests/test_charts.py -k hangs'),
    ('fireworks lists by name', 'bot/providers/fireworks_shape.py', '        kwargs: dict[str, Any] = {"page_size": size, "order_by": "createTime desc"}', '        kwargs: dict[str, Any] = {"page_size": size}', 'tests/test_fireworks.py -k newest_first'),
    ('fireworks pages of fifty', 'bot/providers/fireworks_shape.py', 'PAGE_SIZE = 200  # the most a listing page holds', 'PAGE_SIZE = 50  # the most a listing page holds', 'tests/test_fireworks.py -k pages_of_two_hundred'),
    ('fireworks job not named by its start', 'bot/providers/fireworks_shape.py', '        kwargs: dict[str, Any] = {"supervised_fine_tuning_job_id": job_id, "dataset": self._dataset(training_file),', '        kwargs: dict[str, Any] = {"dataset": self._dataset(training_file),', 'tests/test_fireworks.py -k lost_answer'),
    ('fireworks options unchecked', 'bot/providers/fireworks_shape.py', '        problem = check_start(n_epochs=n_epochs, suffix=suffix, seed=seed, extra=extra or {})', '        problem = None', 'tests/test_fireworks.py -k checked_before'),
    ('early stop taken for going', 'bot/providers/fireworks_shape.py', 'STATES = {"completed": "succeeded", "early stopped": "succeeded", "failed": "failed", "expired": "failed",', 'STATES = {"completed": "succeeded", "failed": "failed", "expired": "failed",', 'tests/test_fireworks.py -k every_state'),
    ('fireworks failure without its reason', 'bot/providers/fireworks_shape.py', '            error_message=(_field(reason, "message") or ("The job expired." if status == "expired" else None))', '            error_message=(None or ("The job expired." if status == "expired" else None))', 'tests/test_fireworks.py -k carries_its_reason'),
    ('another currency taken for dollars', 'bot/providers/fireworks_shape.py', '    return amount if currency == "USD" and amount >= 0 else None', '    return amount', 'tests/test_fireworks.py -k own_estimate'),
    ('progress only from loss metrics', 'bot/poller.py', '        if not (provider.capabilities.metrics or provider.capabilities.progress):', '        if not provider.capabilities.metrics:', 'tests/test_fireworks.py -k progress_comes'),
    ("a button value over Slack's limit", 'bot/messages.py', '    return value if len(value) <= MAX_BUTTON_VALUE else "{}"', '    return value', 'tests/test_messages.py -k within_slacks'),
    ("a try field over Slack's limit", 'bot/comparison.py', '                    MAX_FIELD) for s in (tuned, base)]', '                    100_000) for s in (tuned, base)]', 'tests/test_messages.py -k within_slacks'),
    ('store SQL only SQLite speaks', 'storage/store.py', '"INSERT INTO seen_triggers (trigger_id, seen_at) VALUES (?, ?)"', '"INSERT OR IGNORE INTO seen_triggers (trigger_id, seen_at) VALUES (?, ?)"', 'tests/test_schema.py -k valid_postgresql'),
    ('a declared column the migrations lack', 'storage/schema.py', '    _text("detail"),', '    _text("details"),', 'tests/test_schema.py'),
    ('a drawer outlives a killed bot', 'bot/drawing.py', '            points, title = conn.recv()\n        except (EOFError, OSError):\n            return', '            points, title = conn.recv()\n        except (EOFError, OSError):\n            continue', 'tests/test_serve_process.py -k drawing_process'),
    ("socket bot waits for a signal to its main thread", "bot/cli.py", "            select.select([wake_read], [], [])\n", "            signal.pause()\n", "tests/test_socket_mode.py -k another_thread"),
    ("replicas migrate without a lock", "storage/engines.py", '                conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")\n', "", "tests/test_storage.py -k starting_together_on_an_empty"),
    ("postgresql writes without the write lock", "storage/engines.py", '        first = "SELECT 1" if row_locks else f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"', '        first = "SELECT 1"', "tests/test_storage.py -k postgresql"),
    ("every replica polls", "bot/turns.py", "            if not self._take(name, hold):\n                return None\n", "            self._take(name, hold)\n", "tests/test_replicas.py -k once_per_interval"),
    ("a dead holder's turn never lapses", "storage/store.py", '                " WHERE leases.holder = excluded.holder OR leases.held_until <= ?",', '                " WHERE leases.holder = excluded.holder OR ? < 0",', "tests/test_replicas.py -k once_per_interval"),
    ("a crashed predecessor's turn waited out", "bot/turns.py", "                mine = holder is not None and _died_here(holder) and", "                mine = holder is not None and False and", "tests/test_replicas.py -k gone_from_this_machine"),
    ("turns kept at stop", "bot/turns.py", "            self.store.end_turns(self.worker, sorted(self.held))\n", "            pass\n", "tests/test_replicas.py -k gone_from_this_machine"),
    ("every process posts in every channel", "bot/delivery.py", '                    if not self._channel_turn(row["channel_id"]):', '                    if False:', "tests/test_delivery.py -k pace_between"),
    ("Slack's wait dies with its process", "bot/delivery.py", "            self.store.take_turn(f\"channel:{channel}\", self.worker_id, hold=CHANNEL_TURN, at_least_until=at)\n", "", "tests/test_delivery.py -k turn_passes"),
    ("a database outage logs a traceback a run", "bot/app.py", "            except DB_ERRORS as error:\n                if not is_transient(error):\n                    raise\n", "            except ZeroDivisionError as error:\n                if not is_transient(error):\n                    raise\n", "tests/test_replicas.py -k outage"),
    ("a database outage answered as a bug", "handlers/errors.py", "    message = format_database_unavailable(error_id) if away else format_apology(error_id)", "    message = format_apology(error_id)", "tests/test_replicas.py -k outage"),
    ("postgresql without a statement timeout", "storage/engines.py", '        options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={LOCK_TIMEOUT_MS}"', '        options = f"-c lock_timeout={LOCK_TIMEOUT_MS}"', "tests/test_storage.py -k stuck"),
    ("a dropped pooled connection fails its first use", "storage/engines.py", "                if broken and attempt == 1 and _is_driver_error(error):", "                if False:", "tests/test_storage.py -k dropped"),
    ("every poll rewrites every job", "storage/store.py", '                    if (row["observed_at"] or 0) <= now - OBSERVED_REFRESH_SECONDS:', '                    if True:', "tests/test_storage.py -k once_a_minute"),
    ("claims wait on a row another replica holds", "storage/engines.py", '"skip_locked": " FOR UPDATE SKIP LOCKED",', '"skip_locked": " FOR UPDATE",', "tests/test_storage.py -k skips_a_row"),
    ("claims queue behind every writer", "storage/engines.py", '        first = "SELECT 1" if row_locks else', '        first = f"SELECT pg_advisory_xact_lock({WRITE_LOCK})" if row_locks else', "tests/test_storage.py -k skips_a_row"),
    ("postgresql never takes a later step", "storage/engines.py", "    for name in missing:\n        POSTGRES_STEPS[name](conn)\n", "", "tests/test_storage.py -k later_schema_step"),
    # Spend and the watchdog (issue 18).
    ("hold decided twice", "storage/spend.py", '            if row["state"] != "held":\n                return "decided", found\n', "", "tests/test_spend.py -k decided_once"),
    ("hold never expires", "storage/spend.py", '            if (row["expires_at"] or 0) <= now:', '            if False:', "tests/test_spend.py -k expires"),
    ("anyone starts a held start", "bot/jobs.py", '            if caller.user_id != hold["user_id"]:\n                return format_note("Only the person', '            if False:\n                return format_note("Only the person', "tests/test_spend.py -k requester_starts"),
    ("a requester approves their own start", "bot/jobs.py", '            if caller.user_id == hold["user_id"]:', '            if False:', "tests/test_spend.py -k approver_other"),
    ("anyone approves", "bot/jobs.py", '            if caller.user_id not in self.approvers:', '            if False:', "tests/test_spend.py -k approver_other"),
    ("no hold above confirm_above", "bot/jobs.py", "        elif threshold is not None and estimate.amount > threshold:", "        elif False:", "tests/test_spend.py -k requester_starts"),
    ("budget never holds", "bot/jobs.py", "            if spent + (estimate.amount or 0) > budget:", "            if False:", "tests/test_spend.py -k past_the_months_budget"),
    ("an unknown estimate passes as free", "bot/jobs.py", "        if estimate.amount is None:\n            reasons.append(", "        if False:\n            reasons.append(", "tests/test_spend.py -k unknown_estimate"),
    ("held click replay not checked", "handlers/actions.py", "        if not first_sight(services, body):\n            send(format_replay())", "        if False:\n            send(format_replay())", "tests/test_spend.py -k requester_starts"),
    ("file read for every estimate", "bot/costs.py", "    counted = store.spend.file_tokens(provider.name, training_file, facts.name)", "    counted = None", "tests/test_spend.py -k counted_once"),
    ("together price taken as dollars", "bot/providers/together_shape.py", "    return total_price / 1e9 if", "    return total_price / 1 if", "tests/test_spend.py -k nano_dollars"),
    ("watchdog warns every time", "storage/watch.py", "                               (provider, job_id, kind, json.dumps(detail), self._clock())).rowcount != 1:", "                               (provider, job_id, kind, json.dumps(detail), self._clock())).rowcount < 0:", "tests/test_spend.py -k both_engines"),
    ("watchdog cancel ignored", "bot/watchdog.py", '            if any(f["watchdog"] == "cancel" and f["origin"] == "start" for f in followers):', "            if False:", "tests/test_watchdog.py -k cancels_at_the_provider"),
    ("watchdog reads every cycle", "storage/watch.py", '            " AND coalesce(j.metrics_read_at, 0) <= ?"', '            " AND ? IS NOT NULL"', "tests/test_watchdog.py -k at_most_every"),
    ("watchdog reads uncapped", "bot/watchdog.py", "        for job_id in self.store.watch.metrics_due(provider.name, training, every=self.every)[:budget]:", "        for job_id in self.store.watch.metrics_due(provider.name, training, every=self.every):", "tests/test_watchdog.py -k at_most_every"),
    ("watchdog off still reads", "storage/watch.py", "WHERE c.channel_id = s.channel_id), 'warn') != 'off'\"", "WHERE c.channel_id = s.channel_id), 'warn') != 'nothing'\"", "tests/test_watchdog.py -k reads_nothing"),
    ("nan stored as a number", "storage/watch.py", "    if math.isnan(value):\n        return _NAN\n", "", "tests/test_spend.py -k both_engines"),
    ("rising on a single bump", "bot/watchdog.py", "RISE_READINGS = 3", "RISE_READINGS = 1", "tests/test_watchdog.py -k noise"),
]


def main(only: list[str]) -> int:
    """Returns 1 when a mutation went unnoticed (GREEN) or its line no longer exists (??): either is a weak guard."""
    weak = 0
    for name, path, old, new, tests in MUTATIONS:
        if only and not any(o in name for o in only):
            continue
        p = ROOT / path
        text = p.read_text()
        if old not in text:
            print(f"?? {name}: line not found")
            weak += 1
            continue
        p.write_text(text.replace(old, new, 1))
        try:
            try:
                r = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-n", "0", "-p",
                                    "no:cacheprovider", *shlex.split(tests)], cwd=ROOT, capture_output=True, text=True,
                                   timeout=300)
                failed = bool(r.returncode)
            except subprocess.TimeoutExpired:
                failed = True  # the tests hung: the mutation was noticed, if not gracefully
            print(("RED  " if failed else "GREEN") + f" {name}")
            weak += not failed
        finally:
            p.write_text(text)
    return 1 if weak else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
