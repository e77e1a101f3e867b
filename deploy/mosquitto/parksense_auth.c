/*
 * parksense access rules for Mosquitto 2.0 that its password and ACL files cannot express
 * (plugin API version 5). Built by parksense with the system's mosquitto-dev headers
 * (services/stack/broker_plugin.py); the rules themselves live in services/core/access.py.
 *
 * 1. Client ids: a credential may connect only with a client id that starts with its
 *    username followed by a dot ("device.f01-meter-1" -> "device.f01-meter-1.<anything>"),
 *    so no credential can take another client's id and its persistent session. Usernames
 *    hold no dot after their kind, so two credentials' prefixes never overlap.
 * 2. Subscriptions: Mosquitto 2.0's ACL file grants every SUBSCRIBE and only filters what
 *    is delivered. Here a subscription is refused (SUBACK 0x87, or 0x80 for MQTT 3.1.1)
 *    unless every topic it can match is inside one of the user's subscription grants,
 *    read from the file named by `plugin_opt_subscriptions` ("username filter" lines),
 *    which parksense writes beside the ACL file and Mosquitto re-reads on SIGHUP.
 *
 * 3. Reloads: Mosquitto 2.0.11 checks every session it holds again at a reload (SIGHUP),
 *    offline ones too, and "disconnects" each one the check refuses; for an offline session
 *    that second disconnect corrupts its session-expiry list and later crashes the broker
 *    (docs/security.md, "Mosquitto 2.0.11 notes"). The plugin tracks which clients are
 *    connected and lets an offline session be at a reload; its client can do nothing until
 *    it connects again, and that CONNECT is checked in full against the new files.
 *
 * The callbacks run before the password and ACL files' own checks: they refuse, or defer
 * so that those files still decide.
 */
#define _GNU_SOURCE /* tdestroy */
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_LINE 1024

struct grant {
	char *username;
	char *filter;
};

static mosquitto_plugin_id_t *plugin_id = NULL;
static char *grants_path = NULL;
static struct grant *grants = NULL;
static size_t grant_count = 0;
/* The clients connected now: a tree (tsearch) of their context addresses. In 2.0.11 the
 * BASIC_AUTH event comes at a CONNECT (handle_connect.c) and in a reload's re-check of every
 * session (security_default.c), nowhere else; DISCONNECT comes from context__disconnect
 * (context.c) for every context that leaves the connected state, a refused CONNECT and a
 * session taken over included, before the context can be freed. So an address is added at
 * the CONNECT and removed at that disconnect: one in the tree is always a live, connected
 * client, even where a freed context's memory is reused. */
static void *connected = NULL;
/* From the RELOAD event to the next TICK. loop.c runs a reload in one iteration of the main
 * loop: the RELOAD event (mosquitto_security_init), the re-check of every session
 * (mosquitto_security_apply), then, at the end of the iteration, TICK; no packet is read in
 * between. Set only once a TICK has been seen (2.0.11 sends none with per_listener_settings,
 * which parksense does not use): a flag nothing clears would let every CONNECT through. */
static int reloading = 0;
static int ticking = 0;

static void free_grants(void)
{
	size_t i;

	for(i = 0; i < grant_count; i++){
		free(grants[i].username);
		free(grants[i].filter);
	}
	free(grants);
	grants = NULL;
	grant_count = 0;
}

/* Read the grants file; on any error no subscription is granted (closed by default). */
static void load_grants(void)
{
	FILE *file;
	char line[MAX_LINE];
	char *space;
	size_t capacity = 0;
	struct grant *grown;

	free_grants();
	if(grants_path == NULL){
		return;
	}
	file = fopen(grants_path, "r");
	if(file == NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, "parksense: cannot read %s; no subscriptions granted",
				grants_path);
		return;
	}
	while(fgets(line, sizeof(line), file)){
		line[strcspn(line, "\r\n")] = '\0';
		space = strchr(line, ' ');
		if(line[0] == '#' || space == NULL){
			continue;
		}
		*space = '\0';
		if(grant_count == capacity){
			capacity = capacity ? capacity * 2 : 64;
			grown = realloc(grants, capacity * sizeof(*grants));
			if(grown == NULL){
				break;
			}
			grants = grown;
		}
		grants[grant_count].username = strdup(line);
		grants[grant_count].filter = strdup(space + 1);
		if(grants[grant_count].username == NULL || grants[grant_count].filter == NULL){
			free(grants[grant_count].username);
			free(grants[grant_count].filter);
			break;
		}
		grant_count++;
	}
	fclose(file);
}

/* Whether every topic that filter `sub` matches is matched by filter `grant`. */
static int filter_covered(const char *sub, const char *grant)
{
	size_t sub_len, grant_len;

	for(;;){
		sub_len = strcspn(sub, "/");
		grant_len = strcspn(grant, "/");
		if(grant_len == 1 && grant[0] == '#'){
			return 1;
		}
		if(sub_len == 1 && sub[0] == '#'){
			return 0;
		}
		if(!(grant_len == 1 && grant[0] == '+')){
			if(sub_len == 1 && sub[0] == '+'){
				return 0;
			}
			if(sub_len != grant_len || strncmp(sub, grant, sub_len) != 0){
				return 0;
			}
		}
		sub += sub_len;
		grant += grant_len;
		if(*grant == '\0'){
			return *sub == '\0';
		}
		if(*sub == '\0'){
			/* "a" is inside "a/#", which also matches its parent level. */
			return strcmp(grant, "/#") == 0;
		}
		sub++;
		grant++;
	}
}

static int compare_clients(const void *a, const void *b)
{
	uintptr_t left = (uintptr_t)a;
	uintptr_t right = (uintptr_t)b;

	return (left > right) - (left < right);
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id;
	size_t length;

	(void)event;
	(void)userdata;
	if(ed->username == NULL){
		/* Anonymous: allow_anonymous false refuses it. */
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(reloading){
		if(tfind(ed->client, &connected, compare_clients) == NULL){
			/* An offline session (restored from persistence, or whose client has gone).
			 * Refused, 2.0.11 would "disconnect" it again and, since the re-check sets its
			 * state to disconnecting first, put it on the session-expiry list a second time
			 * (context__disconnect -> session_expiry__add): once the session is taken over
			 * or expires, the list keeps a pointer to the freed context and the broker
			 * crashes. Its client can do nothing until it connects, checked in full. */
			return MOSQ_ERR_SUCCESS;
		}
	}else if(tsearch(ed->client, &connected, compare_clients) == NULL){
		/* Out of memory: a client the plugin cannot track is not let in. */
		return MOSQ_ERR_AUTH;
	}
	client_id = mosquitto_client_id(ed->client);
	length = strlen(ed->username);
	if(client_id == NULL || strncmp(client_id, ed->username, length) != 0
			|| client_id[length] != '.'){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"parksense: refused client id %s for user %s (must start with \"%s.\")",
				client_id ? client_id : "(none)", ed->username, ed->username);
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;

	(void)event;
	(void)userdata;
	tdelete(ed->client, &connected, compare_clients);
	return MOSQ_ERR_SUCCESS;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username;
	const char *filter;
	size_t i;

	(void)event;
	(void)userdata;
	if(ed->access != MOSQ_ACL_SUBSCRIBE){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	username = mosquitto_client_username(ed->client);
	if(username == NULL){
		return MOSQ_ERR_ACL_DENIED;
	}
	filter = ed->topic;
	if(strncmp(filter, "$share/", 7) == 0){
		/* $share/{group}/{filter}: the grant applies to the filter. */
		filter = strchr(filter + 7, '/');
		if(filter == NULL){
			return MOSQ_ERR_ACL_DENIED;
		}
		filter++;
	}
	for(i = 0; i < grant_count; i++){
		if(strcmp(grants[i].username, username) == 0 && filter_covered(filter, grants[i].filter)){
			return MOSQ_ERR_SUCCESS;
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "parksense: refused subscription %s for user %s",
			ed->topic, username);
	return MOSQ_ERR_ACL_DENIED;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	load_grants();
	reloading = ticking;
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	ticking = 1;
	reloading = 0;
	return MOSQ_ERR_SUCCESS;
}

static void forget_client(void *client)
{
	(void)client;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i;
	int rc;

	(void)userdata;
	plugin_id = identifier;
	for(i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "subscriptions") == 0){
			grants_path = strdup(options[i].value);
		}
	}
	load_grants();
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL);
	}
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	tdestroy(connected, forget_client);
	connected = NULL;
	free_grants();
	free(grants_path);
	grants_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
