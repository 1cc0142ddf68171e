/* broker/commands.h - one handler per command type (internal to the broker).
 *
 * Each handler runs inside the open transaction, fills *r (status 0 and an
 * id, or a FERRY_E* status and a message: a deterministic rejection) and
 * returns 0, or a negative storage/memory error that abandons the batch.
 */
#ifndef FERRY_BROKER_COMMANDS_H
#define FERRY_BROKER_COMMANDS_H

#include "broker/broker_int.h"

/* The existing resource `name` of `kind`: *out set, or NULL with a
 * rejection (EINVAL, ENOTFOUND, EWRONGTYPE) in r. Returns 0. */
int broker_res_existing(struct broker *b, const char *name, uint8_t kind, struct res **out,
                        struct broker_result *r);
/* Like broker_res_existing, but a missing resource is created with the
 * defaults when cmd carries BROKER_CMDF_AUTO_CREATE. 0 or a storage error. */
int broker_res_for_cmd(struct broker *b, const struct broker_cmd *cmd, uint8_t kind,
                       struct res **out, struct broker_result *r, struct ferry_err *err);
/* Write an EINVAL rejection for a bad name into r; returns 0. */
int broker_reject_name(struct broker_result *r, const char *what, const char *name);

int broker_apply_create(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                        struct ferry_err *err);
int broker_apply_delete(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                        struct ferry_err *err);
int broker_apply_publish(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                         struct ferry_err *err);
int broker_apply_push(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                      struct ferry_err *err);
int broker_apply_ack(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                     struct ferry_err *err);
int broker_apply_return(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                        struct ferry_err *err);
int broker_apply_durable_create(struct broker *b, const struct broker_cmd *cmd,
                                struct broker_result *r, struct ferry_err *err);
int broker_apply_durable_ack(struct broker *b, const struct broker_cmd *cmd,
                             struct broker_result *r, struct ferry_err *err);
int broker_apply_durable_delete(struct broker *b, const struct broker_cmd *cmd,
                                struct broker_result *r, struct ferry_err *err);

#endif
