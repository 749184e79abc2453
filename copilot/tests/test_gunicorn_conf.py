class TestGunicornAccessLog:
    def test_it_logs_no_query_string_or_referrer(self):
        from copilot import gunicorn_conf

        assert "%(U)s" in gunicorn_conf.access_log_format
        for atom in ("%(r)s", "%(q)s", "%(f)s"):
            assert atom not in gunicorn_conf.access_log_format
