/* db_hosts.h - the MySQL/MariaDB servers a program may use, in order.
 *
 * mysql_hosts = "host:port,host:port,..." names the nodes of a cluster
 * (MariaDB Galera: every node takes reads and writes) in the order a
 * connection tries them; db.c moves a connection to the next one when its
 * server goes away (see db.h).  The list comes from a settings file or the
 * environment, so it is parsed strictly: an entry that is not host:port
 * (IPv6 as [addr]:port), a port outside 1-65535, an empty entry, an entry
 * given twice or more than PG_DB_HOSTS_MAX entries stop the start with a
 * message that names the entry.  An empty list means the single
 * mysql_host/mysql_port (or mysql_socket) of before. */
#ifndef PG_DB_HOSTS_H
#define PG_DB_HOSTS_H

#include <stddef.h>

#define PG_DB_HOSTS_MAX 16
#define PG_DB_HOST_NAME_MAX 255          /* a DNS name's longest */
#define PG_DB_HOST_TEXT_MAX 272          /* "[name]:65535", or a Unix socket path */

typedef struct {
    char name[PG_DB_HOST_NAME_MAX + 1];  /* what libmariadb connects to: no brackets */
    int port;                            /* 0 with a socket */
    char text[PG_DB_HOST_TEXT_MAX];      /* as logs and /stats show it: "h:p", "[v6]:p", a socket */
} pg_db_host;

typedef struct {
    pg_db_host v[PG_DB_HOSTS_MAX];
    int n;
} pg_db_host_list;

/* Parses a mysql_hosts value into out (n 0 for an empty or blank text).
 * 0, or -1 with the reason in err ("mysql_hosts entry 2 \"x\": ..."). */
int pg_db_hosts_parse(const char *text, pg_db_host_list *out, char *err, size_t errlen);

/* The list a program's settings name: mysql_hosts when it is set, else the
 * one server of host and port, or of socket (mysql_socket may not be
 * combined with mysql_hosts).  0, or -1 with the reason in err. */
int pg_db_hosts_from(const char *hosts, const char *host, int port, const char *socket,
                     pg_db_host_list *out, char *err, size_t errlen);

/* out's entries as one line, "a:1, b:2" (cut to len). */
void pg_db_hosts_describe(const pg_db_host_list *list, char *out, size_t len);

#endif
