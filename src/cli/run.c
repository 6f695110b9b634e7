/* `tidings run`: the whole shop on one machine. It starts the embedded broker
 * in this process (unless brokers are given), then every service as a child
 * process of this same binary, in SPEC order, waiting for each one's /readyz;
 * seeds an administrator and a sample catalogue on the first start; prints
 * one summary; then supervises: a child that dies is restarted with
 * exponential backoff, and Ctrl-C / SIGTERM stops the children in reverse
 * order, each with SIGTERM and then, after a bounded wait, SIGKILL.
 *
 * Everything happens on the main thread around one poll(2) loop: the
 * children's output pipes, a signalfd for SIGINT/SIGTERM/SIGCHLD and the
 * restart timers. Forking only from the main thread matters because
 * PR_SET_PDEATHSIG fires when the forking *thread* exits; it makes a child
 * die with us even if we are killed with SIGKILL. Children get their own
 * process group so the terminal's Ctrl-C reaches only the supervisor, which
 * then stops them in order. Their stdout and stderr are one pipe each: the
 * raw JSON lines go to <data>/logs/<service>.log and, made readable, to our
 * stdout. The in-process broker's logs (td_log) go through a pipe too, so
 * every line is shown the same way. */
#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "cli.h"
#include "run_internal.h"
#include "tidings/auth.h"
#include "tidings/broker.h"
#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/service.h"

extern char **environ;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* ---- children ---------------------------------------------------------- */

static bool name_in(const char *entry, const char *const *names)
{
    for (size_t i = 0; names[i]; i++) {
        size_t n = strlen(names[i]);
        if (!strncmp(entry, names[i], n) && entry[n] == '=') return true;
    }
    return false;
}

/* The environment of child c: ours, with the settings every child must
 * share replaced. Caller frees the array and its strings. */
static char **child_env(const run_t *r, const child_t *c)
{
    static const char *const replaced[] = {"TIDINGS_BROKERS",        "TIDINGS_DATA_DIR",
                                           "TIDINGS_FETCH_WAIT_MS",  "TIDINGS_LOG_FORMAT",
                                           "TIDINGS_LOG_LEVEL",      "TIDINGS_LISTEN_ADDR",
                                           "TIDINGS_ADMIN_PASSWORD", "TIDINGS_USERS_PORT",
                                           "TIDINGS_PRODUCTS_PORT",  "TIDINGS_ORDERS_PORT",
                                           "TIDINGS_PAYMENTS_PORT",  "TIDINGS_NOTIFICATIONS_PORT",
                                           "TIDINGS_WEB_PORT",       NULL};
    size_t n = 0;
    while (environ[n]) n++;
    char **env = td_calloc(n + 32, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!name_in(environ[i], replaced)) env[k++] = td_strdup(environ[i]);
    env[k++] = td_asprintf("TIDINGS_BROKERS=%s", r->brokers);
    env[k++] = td_asprintf("TIDINGS_DATA_DIR=%s", r->data_dir);
    if (r->broker)
        env[k++] = td_strdup("TIDINGS_FETCH_WAIT_MS=1");
    else if (getenv("TIDINGS_FETCH_WAIT_MS"))
        env[k++] = td_asprintf("TIDINGS_FETCH_WAIT_MS=%s", getenv("TIDINGS_FETCH_WAIT_MS"));
    env[k++] = td_strdup("TIDINGS_LOG_FORMAT=json");
    env[k++] = td_asprintf("TIDINGS_LOG_LEVEL=%s", level_names[r->cfg.log_level & 3]);
    env[k++] = td_asprintf("TIDINGS_LISTEN_ADDR=%s", r->cfg.listen_addr);
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        char upper[32];
        snprintf(upper, sizeof(upper), "%s", td_service_name((td_service_t)s));
        for (char *p = upper; *p; p++) *p = (char)(*p - 32);
        env[k++] = td_asprintf("TIDINGS_%s_PORT=%d", upper, r->cfg.ports[s]);
    }
    if (c->svc == TD_SVC_USERS && r->admin_password)
        env[k++] = td_asprintf("TIDINGS_ADMIN_PASSWORD=%s", r->admin_password);
    env[k] = NULL;
    return env;
}

static void free_env(char **env)
{
    for (size_t i = 0; env[i]; i++) free(env[i]);
    free(env);
}

/* Starts child c. Between fork and exec only async-signal-safe calls: the
 * broker's threads may hold locks we would otherwise deadlock on. */
static int spawn(run_t *r, child_t *c)
{
    char **env = child_env(r, c);
    char *argv[] = {(char *)"tidings", (char *)c->name, NULL};
    int p[2] = {-1, -1};
    int err = 0;
    if (pipe2(p, O_CLOEXEC) < 0) {
        err = -errno;
        goto out;
    }
    /* PR_SET_PDEATHSIG follows the forking thread: the main one only. */
    assert(getpid() == (pid_t)syscall(SYS_gettid));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        err = -errno;
        close(p[0]);
        close(p[1]);
        goto out;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1); /* we died before the prctl */
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execve("/proc/self/exe", argv, env);
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    if (c->fd >= 0) close(c->fd); /* the old pipe is drained by now */
    c->fd = p[0];
    c->len = 0;
    c->pid = pid;
    c->ready = false;
    c->started_ms = td_mono_ms();
    c->next_probe = c->started_ms + 50;
    c->restart_at = 0;
    c->last_probe[0] = '\0';
out:
    free_env(env);
    return err;
}

static char *describe_status(int status)
{
    if (WIFEXITED(status)) return td_asprintf("exited with status %d", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        return td_asprintf("was killed by signal %d (%s)", sig, strsignal(sig));
    }
    return td_strdup("stopped");
}

/* ---- the loop ---------------------------------------------------------- */

static void on_exit_child(run_t *r, child_t *c, int status)
{
    c->pid = 0;
    c->last_status = status;
    c->ready = false;
    if (r->phase != PHASE_UP) return; /* startup and shutdown handle it */
    int64_t up = td_mono_ms() - c->started_ms;
    if (up >= HEALTHY_RESET_MS) c->backoff_ms = BACKOFF_FIRST_MS;
    char *how = describe_status(status);
    say_warn("%s %s after %.1f s; restarting it in %lld s", c->name, how, (double)up / 1000.0,
             (long long)(c->backoff_ms / 1000));
    free(how);
    c->restart_at = td_mono_ms() + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void reap(run_t *r)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int s = 0; s < TD_SVC__COUNT; s++)
            if (r->kids[s].pid == pid) on_exit_child(r, &r->kids[s], status);
}

/* One turn: waits up to timeout_ms for output or a signal, handles them. */
void run__turn(run_t *r, int timeout_ms)
{
    struct pollfd pfd[TD_SVC__COUNT + 2];
    child_t *who[TD_SVC__COUNT + 2];
    nfds_t n = 0;
    pfd[n] = (struct pollfd){.fd = r->sigfd, .events = POLLIN};
    who[n++] = NULL;
    if (r->self.fd >= 0) {
        pfd[n] = (struct pollfd){.fd = r->self.fd, .events = POLLIN};
        who[n++] = &r->self;
    }
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        if (r->kids[s].fd < 0) continue;
        pfd[n] = (struct pollfd){.fd = r->kids[s].fd, .events = POLLIN};
        who[n++] = &r->kids[s];
    }
    if (poll(pfd, n, timeout_ms) < 0) return;
    for (nfds_t i = 1; i < n; i++)
        if (pfd[i].revents) run__pump(r, who[i]);
    if (pfd[0].revents & POLLIN) {
        struct signalfd_siginfo si;
        while (read(r->sigfd, &si, sizeof(si)) == sizeof(si)) {
            if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) r->stop_signals++;
        }
        reap(r);
    }
}

/* Points at the log of c, to explain a failure (its lines were shown
 * above as they came). */
static void show_tail(run_t *r, child_t *c)
{
    fprintf(stderr, "its log: %s/%s.log\n", r->logs_dir, c->name);
}

/* Starts the children in order, each after the previous one is ready.
 * 0, or -1 after explaining on stderr which one failed and why. */
static int start_all(run_t *r)
{
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        child_t *c = &r->kids[s];
        int err = spawn(r, c);
        if (err < 0) {
            fprintf(stderr, "tidings run: cannot start %s: %s\n", c->name, strerror(-err));
            return -1;
        }
        int64_t deadline = td_mono_ms() + READY_TIMEOUT_MS;
        while (!run__probe(r, c)) {
            run__turn(r, 50);
            if (r->stop_signals) return -1;
            for (int o = 0; o <= s; o++) {
                if (r->kids[o].pid) continue;
                for (int i = 0; i < 20 && r->kids[o].fd >= 0; i++) run__turn(r, 50);
                char *how = describe_status(r->kids[o].last_status);
                fprintf(stderr, "\ntidings run: %s %s while starting up.\n", r->kids[o].name, how);
                free(how);
                show_tail(r, &r->kids[o]);
                return -1;
            }
            if (td_mono_ms() > deadline) {
                fprintf(stderr,
                        "\ntidings run: %s did not become ready within %d s (GET /readyz on "
                        "port %d: %s).\n",
                        c->name, READY_TIMEOUT_MS / 1000, r->cfg.ports[s],
                        *c->last_probe ? c->last_probe : "no answer");
                show_tail(r, c);
                return -1;
            }
        }
        say("%s is ready on port %d (pid %d, %.1f s)", c->name, r->cfg.ports[s], (int)c->pid,
            (double)(td_mono_ms() - c->started_ms) / 1000.0);
    }
    return 0;
}

static void stop_child(run_t *r, child_t *c)
{
    if (!c->pid) return;
    pid_t pid = c->pid;
    kill(pid, SIGTERM);
    int64_t deadline = td_mono_ms() + STOP_TIMEOUT_MS;
    while (c->pid && td_mono_ms() < deadline && r->stop_signals < 2) run__turn(r, 50);
    if (c->pid) {
        say_warn("%s did not stop within %d s; killing it", c->name, STOP_TIMEOUT_MS / 1000);
        kill(pid, SIGKILL);
        int status;
        if (waitpid(pid, &status, 0) == pid) c->pid = 0;
    }
    /* What it wrote while stopping. */
    for (int i = 0; i < 40 && c->fd >= 0; i++) run__turn(r, 5);
}

static void stop_all(run_t *r)
{
    r->phase = PHASE_STOPPING;
    for (int s = TD_SVC__COUNT - 1; s >= 0; s--) {
        r->kids[s].restart_at = 0;
        stop_child(r, &r->kids[s]);
    }
}

static void supervise(run_t *r)
{
    r->phase = PHASE_UP;
    while (!r->stop_signals) {
        int64_t now = td_mono_ms();
        int timeout = 500;
        for (int s = 0; s < TD_SVC__COUNT; s++) {
            child_t *c = &r->kids[s];
            if (!c->pid && c->restart_at) {
                /* The old pipe is drained first (so its last lines are not
                 * lost), unless something else still holds it open. */
                if (now >= c->restart_at + 5000 && c->fd >= 0) {
                    close(c->fd);
                    c->fd = -1;
                }
                if (now >= c->restart_at && c->fd < 0) {
                    c->restarts++;
                    int err = spawn(r, c);
                    if (err < 0) {
                        say_warn("cannot restart %s: %s", c->name, strerror(-err));
                        c->restart_at = now + c->backoff_ms;
                    } else {
                        say("%s restarted (pid %d, restart %d)", c->name, (int)c->pid, c->restarts);
                    }
                } else if (c->restart_at - now < timeout) {
                    timeout = (int)(c->restart_at > now ? c->restart_at - now : 10);
                }
            }
            if (c->pid && !c->ready && c->restarts) {
                if (run__probe(r, c)) say("%s is ready again on port %d", c->name, r->cfg.ports[s]);
                if (timeout > PROBE_INTERVAL_MS) timeout = PROBE_INTERVAL_MS;
            }
        }
        run__turn(r, timeout);
    }
}

/* ---- setup ------------------------------------------------------------- */

/* `run` has no port of its own (its children's come from
 * TIDINGS_<SERVICE>_PORT, and td_config_load refuses --port for it), so
 * its --help leaves that flag out; it adds its own flag and the variable
 * only a child reads, so the text names exactly what this command accepts
 * and reads. */
static const td_flag_t run_flags[] = {
    {"--json-logs", NULL, NULL, TD_FLAG_SWITCH, offsetof(run_t, json_logs),
     "print the services' raw JSON log lines instead of\n"
     "readable ones (always in <data>/logs/<service>.log)"},
};

static const td_command_t run_cmd = {
    .name = "run",
    .flags = run_flags,
    .flag_cnt = TD_ARRAY_SIZE(run_flags),
    .env_help = true,
    .more = "  TIDINGS_WEB_DIR               (web: the pages in " WEB_DIR_DEFAULT ")\n"
            "\nStarts the whole shop: the embedded broker (unless brokers are given), then\n"
            "users, products, orders, payments, notifications and web as child processes\n"
            "on the ports above, each restarted with backoff if it dies. The first start on\n"
            "an empty data dir creates admin@tidings.local (password: TIDINGS_ADMIN_PASSWORD,\n"
            "or generated and printed once) and a sample catalogue. The embedded broker's\n"
            "bootstrap list goes to <data>/brokers for `tidings events` and `tidings trace`.\n"
            "Ctrl-C or SIGTERM stops everything.\n",
};

/* Whether port can be listened on at addr (the children's listen
 * address, numeric as the HTTP layer takes it). Held by a listener counts
 * as busy; TIME_WAIT does not, as for the children (SO_REUSEADDR). */
static bool port_free(const char *addr, int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    const struct sockaddr *sa;
    socklen_t len;
    if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1) {
        sa = (const struct sockaddr *)&sin;
        len = sizeof(sin);
    } else if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1) {
        sa = (const struct sockaddr *)&sin6;
        len = sizeof(sin6);
    } else {
        return true; /* not numeric: the child says what is wrong with it */
    }
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return true;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = bind(fd, sa, len) == 0 || errno != EADDRINUSE;
    close(fd);
    return ok;
}

/* Every child's port must be its own before anything starts: a port that
 * another program (often an earlier `tidings run`) holds would answer our
 * /readyz probes for a child that never got it, and the summary would
 * present someone else's shop, with an admin password that is not its. */
static int check_ports(const run_t *r)
{
    int bad = 0;
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        char var[48];
        snprintf(var, sizeof(var), "TIDINGS_%s_PORT", td_service_name((td_service_t)s));
        for (char *p = var; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        for (int o = 0; o < s; o++) {
            if (r->cfg.ports[o] != r->cfg.ports[s]) continue;
            fprintf(stderr,
                    "tidings run: %s and %s are both given port %d; each needs its own (%s)\n",
                    td_service_name((td_service_t)o), td_service_name((td_service_t)s),
                    r->cfg.ports[s], var);
            bad++;
        }
        if (!port_free(r->cfg.listen_addr, r->cfg.ports[s])) {
            fprintf(stderr,
                    "tidings run: port %d (%s) is already in use on %s; is another tidings "
                    "running? Stop it, or choose a free port with %s.\n",
                    r->cfg.ports[s], td_service_name((td_service_t)s), r->cfg.listen_addr, var);
            bad++;
        }
    }
    return bad ? -1 : 0;
}

static char *generate_password(void)
{
    unsigned char raw[12];
    randombytes_buf(raw, sizeof(raw));
    return td_b64url_encode(raw, sizeof(raw));
}

static int open_log(const run_t *r, const char *name)
{
    char *path = td_asprintf("%s/%s.log", r->logs_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    free(path);
    return fd;
}

static void init_child(child_t *c, const char *name, int svc)
{
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->svc = (td_service_t)svc;
    c->fd = c->logfd = -1;
    c->backoff_ms = BACKOFF_FIRST_MS;
}

int cli_run_main(int argc, char **argv)
{
    run_t run, *r = &run;
    memset(r, 0, sizeof(*r));
    r->sigfd = -1;
    init_child(&r->self, "run", -1);
    for (int s = 0; s < TD_SVC__COUNT; s++) init_child(&r->kids[s], td_service_name(s), s);
    char errstr[512];
    int rc = 1;

    if (td_config_wants_help(argc, argv)) {
        td_config_usage_cmd(stdout, &run_cmd);
        return 0;
    }
    int err = td_config_load_cmd(&r->cfg, &run_cmd, r, argc, argv, NULL, errstr, sizeof(errstr));
    if (err < 0) {
        fprintf(stderr, "tidings run: %s\n", errstr);
        td_config_usage_cmd(stderr, &run_cmd);
        td_config_free(&r->cfg);
        return 2;
    }
    r->color = !r->json_logs && isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    if (check_ports(r) < 0) {
        td_config_free(&r->cfg);
        return 1;
    }

    /* Before any thread exists (the broker's, curl's), so all inherit it. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    r->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0) {
        fprintf(stderr, "tidings run: libsodium failed to initialise\n");
        goto out;
    }

    char derr[512];
    if (td_data_dir_secure(&r->cfg, derr, sizeof(derr)) != 0) {
        fprintf(stderr, "tidings run: %s\n", derr);
        goto out;
    }
    char resolved[PATH_MAX];
    if (!realpath(r->cfg.data_dir, resolved)) {
        fprintf(stderr, "tidings run: data dir %s: %s\n", r->cfg.data_dir, strerror(errno));
        goto out;
    }
    r->data_dir = td_strdup(resolved);
    r->logs_dir = td_asprintf("%s/logs", r->data_dir);
    if (td_mkdirs(r->logs_dir, 0700) < 0) {
        fprintf(stderr, "tidings run: cannot create %s: %s\n", r->logs_dir, strerror(errno));
        goto out;
    }
    for (int s = 0; s < TD_SVC__COUNT; s++) r->kids[s].logfd = open_log(r, r->kids[s].name);
    r->self.logfd = open_log(r, "run");

    /* Our own log lines (and the embedded broker's) through a pipe we pump;
     * non-blocking so a burst can never stall a broker thread. */
    int lp[2];
    if (pipe2(lp, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "tidings run: pipe: %s\n", strerror(errno));
        goto out;
    }
    fcntl(lp[1], F_SETPIPE_SZ, 1024 * 1024);
    r->self.fd = lp[0];
    td_log_set_fd(lp[1]);
    td_log_init("run", r->cfg.log_level, true);

    const char *host = r->cfg.listen_addr;
    if (!strcmp(host, "0.0.0.0") || !strcmp(host, "*") || !*host) host = "127.0.0.1";
    r->host = strchr(host, ':') ? td_asprintf("[%s]", host) : td_strdup(host);

    if (td_config_load_secret(&r->cfg, errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "tidings run: %s\n", errstr);
        goto out;
    }

    /* Every child would stop on a bad Kafka client setting: say it once. */
    bool plaintext = true;
    if (td_kafka_user_settings_check(&plaintext, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "tidings run: %s\n", errstr);
        goto out;
    }
    /* A brokers file left by an earlier run names a broker that died with
     * it: only brokers given by flag or environment count. */
    if (r->cfg.brokers && !r->cfg.brokers_embedded) {
        r->brokers = td_strdup(r->cfg.brokers);
        if (td_topics_ensure(&r->cfg, errstr, sizeof(errstr)) < 0)
            say_warn("could not make sure the topics exist: %s", errstr);
    } else {
        r->broker = td_broker_start(&r->cfg, 3, errstr, sizeof(errstr));
        if (!r->broker) {
            fprintf(stderr, "tidings run: cannot start the embedded broker: %s\n", errstr);
            goto out;
        }
        r->brokers = td_strdup(td_broker_bootstraps(r->broker));
        say("embedded broker on %s", r->brokers);
        if (!plaintext)
            say_warn("the embedded broker speaks PLAINTEXT only, but TIDINGS_KAFKA_* settings ask "
                     "for another security.protocol: give --brokers");
    }
    char *bpath = td_asprintf("%s/brokers", r->data_dir);
    char *btext = td_asprintf("%s\n", r->brokers);
    if (td_write_file(bpath, btext, strlen(btext), 0600) < 0)
        say_warn("cannot write %s: %s", bpath, strerror(errno));
    free(bpath);
    free(btext);

    char *marker = td_asprintf("%s/" SEED_MARKER, r->data_dir);
    r->first_start = access(marker, F_OK) != 0;
    free(marker);
    if (r->cfg.admin_password) {
        r->admin_password = td_strdup(r->cfg.admin_password);
    } else if (r->first_start) {
        r->admin_password = generate_password();
        r->admin_generated = true;
    }

    r->phase = PHASE_STARTING;
    if (start_all(r) == 0) {
        if (r->first_start && r->admin_password) run__seed(r);
        run__summary(r);
        supervise(r);
        rc = 0;
        say("stopping (signal received)");
    } else if (r->stop_signals) {
        rc = 0;
        say("stopping (signal received during startup)");
    }
    stop_all(r);
    if (r->broker) {
        td_broker_stop(r->broker);
        r->broker = NULL;
    }
    say("all stopped");
    for (int i = 0; i < 20 && r->self.fd >= 0; i++) {
        run__turn(r, 5);
        if (r->self.len == 0) break;
    }
out:
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        child_t *c = &r->kids[s];
        if (c->pid) { /* only on an early failure path */
            kill(c->pid, SIGKILL);
            waitpid(c->pid, NULL, 0);
        }
        if (c->fd >= 0) close(c->fd);
        if (c->logfd >= 0) close(c->logfd);
        free(c->buf);
    }
    td_log_set_fd(STDERR_FILENO);
    if (r->self.fd >= 0) {
        run__turn(r, 0);
        close(r->self.fd);
    }
    if (r->self.logfd >= 0) close(r->self.logfd);
    free(r->self.buf);
    if (r->broker) td_broker_stop(r->broker);
    if (r->sigfd >= 0) close(r->sigfd);
    curl_global_cleanup();
    free(r->brokers);
    free(r->data_dir);
    free(r->logs_dir);
    free(r->host);
    free(r->admin_password);
    td_config_free(&r->cfg);
    return rc;
}
