import { Kind, type FieldNode, type GraphQLResolveInfo, type SelectionSetNode } from 'graphql';

/**
 * The fields the operation selects under the field being resolved, through fragments too, so that a
 * parent can read in one statement what its children will ask for.
 */
export function selectedSubfields(info: GraphQLResolveInfo): FieldNode[] {
  const fields: FieldNode[] = [];
  const visitedFragments = new Set<string>();
  const visit = (selectionSet: SelectionSetNode | undefined) => {
    for (const selection of selectionSet?.selections ?? []) {
      if (selection.kind === Kind.FIELD) {
        fields.push(selection);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        visit(selection.selectionSet);
      } else if (!visitedFragments.has(selection.name.value)) {
        visitedFragments.add(selection.name.value);
        visit(info.fragments[selection.name.value]?.selectionSet);
      }
    }
  };
  for (const node of info.fieldNodes) visit(node.selectionSet);
  return fields;
}

/** A field's string argument, written inline or as a variable; undefined when it is neither. */
export function stringArgument(info: GraphQLResolveInfo, field: FieldNode, name: string): string | undefined {
  const value = field.arguments?.find((argument) => argument.name.value === name)?.value;
  if (value?.kind === Kind.STRING) return value.value;
  if (value?.kind === Kind.VARIABLE) {
    const variable: unknown = info.variableValues[value.name.value];
    return typeof variable === 'string' ? variable : undefined;
  }
  return undefined;
}
